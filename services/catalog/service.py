"""Catalog business rules: who may see and change a video, its lifecycle, comments, reactions and
the hand-offs to the upload code and the transcoder. No HTTP here; the routes in api.py call these.

Lifecycle (``TRANSITIONS``)::

    awaiting_upload ──> uploading ──> processing ──> ready
        │     ^             │  │           │
        │     └─ abandoned ─┘  │           └───────> failed   (transcoder: bad input, with a reason)
        │                      └───────────────────> failed   (upload refused: not a video, ...)
        └─────────────────────────> processing                (one-shot PUT /videos/{id}/source)

Every status change is one compare-and-set UPDATE, so two racing callers cannot both move a
video, and ``ready``/``failed`` are final.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from common.commit_hooks import after_commit
from common.events import new_event
from common.outbox import stage
from common.storage import InvalidKey, Storage, StorageError, validate_key
from common.tokens import Identity
from services.catalog import repository as repo
from services.catalog.errors import (
    CommentNotFound,
    CreatorRequired,
    InvalidIdentity,
    InvalidStorageKey,
    InvalidTransition,
    NotAuthor,
    NotOwner,
    NotProcessing,
    ParentNotFound,
    ReplyDepth,
    ResultConflict,
    ThumbnailNotFound,
    VideoNotFound,
    VideoNotReady,
)
from services.catalog.models import (
    AUTHOR_NAME_MAX,
    CURRENCY,
    Comment,
    CommentReaction,
    ReactionKind,
    Video,
    VideoReaction,
    VideoStatus,
    Visibility,
)
from services.catalog.pagination import Ordering, Position, decode_cursor, encode_cursor
from services.catalog.schemas import CommentCreate, TranscodeResult, VideoCreate

log = structlog.get_logger("catalog")
SOURCE = "catalog"
T = TypeVar("T")

PUBLISHING_ROLES = frozenset({"creator", "admin"})

TRANSITIONS: dict[VideoStatus, frozenset[VideoStatus]] = {
    VideoStatus.awaiting_upload: frozenset({VideoStatus.uploading, VideoStatus.processing}),
    # Back to awaiting_upload when an upload is terminated or expires; failed when the uploaded
    # bytes are refused (too large, not a video) before any transcoding.
    VideoStatus.uploading: frozenset(
        {VideoStatus.awaiting_upload, VideoStatus.processing, VideoStatus.failed}
    ),
    VideoStatus.processing: frozenset({VideoStatus.ready, VideoStatus.failed}),
    VideoStatus.ready: frozenset(),
    VideoStatus.failed: frozenset(),
}


def sources_of(target: VideoStatus) -> list[VideoStatus]:
    """The statuses a video may move to ``target`` from."""
    return [status for status, targets in TRANSITIONS.items() if target in targets]


# --- storage layout (SPEC §5) ------------------------------------------------------------------


def video_prefix(video_id: uuid.UUID) -> str:
    """HLS output: videos/{id}/master.m3u8, videos/{id}/{rendition}/..."""
    return f"videos/{video_id}/"


def thumbnail_key(video_id: uuid.UUID) -> str:
    return f"thumbnails/{video_id}.jpg"


def upload_prefix(video_id: uuid.UUID) -> str:
    """Where the uploaded original (and any multipart upload in progress) lives."""
    return f"uploads/{video_id}/"


# --- who is asking -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """The verified caller, with its user id as a UUID."""

    user_id: uuid.UUID
    role: str
    # The display name the token carries (None in older tokens), stored with what they write.
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_identity(cls, identity: Identity) -> Actor:
        name = identity.name[:AUTHOR_NAME_MAX] if identity.name else None
        try:
            return cls(user_id=uuid.UUID(identity.user_id), role=identity.role, name=name)
        except ValueError as exc:
            raise InvalidIdentity() from exc


def may_see(video: Video, actor: Actor | None) -> bool:
    """Private videos are their creator's and admins'; public and unlisted ones are anyone's by id."""
    if video.visibility != Visibility.private.value:
        return True
    return actor is not None and (actor.is_admin or actor.user_id == video.creator_id)


def may_manage(video: Video, actor: Actor) -> bool:
    return actor.is_admin or actor.user_id == video.creator_id


async def visible_video(
    session: AsyncSession, video_id: uuid.UUID, *, actor: Actor | None, lock: bool = False
) -> Video:
    """The video, or 404 when it does not exist or the caller may not know that it does."""
    video = await repo.get_video(session, video_id, lock=lock)
    if video is None or not may_see(video, actor):
        raise VideoNotFound()
    return video


async def managed_video(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor) -> Video:
    """The video its creator or an admin is changing: 404 when invisible to the caller, else 403."""
    video = await visible_video(session, video_id, actor=actor)
    if not may_manage(video, actor):
        raise NotOwner()
    return video


def _require_ready(video: Video) -> None:
    if video.status != VideoStatus.ready.value:
        raise VideoNotReady()


# --- pages -------------------------------------------------------------------------------------


class Sort(StrEnum):
    newest = "newest"
    most_viewed = "most_viewed"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _position(cursor: str | None, ordering: Ordering) -> Position | None:
    return decode_cursor(cursor, ordering) if cursor else None


def _video_page(videos: list[Video], *, ordering: Ordering, limit: int) -> Page[Video]:
    """``videos`` was fetched with limit + 1 rows: the extra row only says a next page exists."""
    if len(videos) <= limit:
        return Page(items=videos, next_cursor=None)
    items = videos[:limit]
    last = items[-1]
    value = {
        Ordering.published: last.published_at,
        Ordering.created: last.created_at,
        Ordering.views: last.view_count,
    }[ordering]
    assert value is not None  # published_at is set on every ready (hence listed) video
    return Page(items=items, next_cursor=encode_cursor(ordering, value, last.id))


# --- videos ------------------------------------------------------------------------------------


async def create_video(session: AsyncSession, *, actor: Actor, data: VideoCreate) -> Video:
    if actor.role not in PUBLISHING_ROLES:
        raise CreatorRequired()
    video = await repo.insert_video(
        session,
        creator_id=actor.user_id,
        title=data.title,
        description=data.description,
        tags=data.tags,
        visibility=data.visibility.value,
        price_per_minute=data.price_per_minute,
        status=VideoStatus.awaiting_upload.value,
    )
    await _event(
        session,
        "catalog.video_created",
        video,
        {"title": video.title, "price_per_minute": video.price_per_minute, "currency": CURRENCY},
        key=str(video.id),
        occurred_at=video.created_at,
    )
    return video


@dataclass(frozen=True, slots=True)
class VideoView:
    video: Video
    my_reaction: ReactionKind | None


async def get_video(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor | None) -> VideoView:
    video = await visible_video(session, video_id, actor=actor)
    reaction = None
    if actor is not None:
        reaction = await repo.get_reaction(session, VideoReaction, target_id=video_id, user_id=actor.user_id)
    return VideoView(video=video, my_reaction=reaction)


async def update_video(
    session: AsyncSession, video_id: uuid.UUID, *, actor: Actor, changes: dict[str, Any]
) -> Video:
    video = await managed_video(session, video_id, actor=actor)
    if not changes:
        return video
    values = {key: value.value if isinstance(value, StrEnum) else value for key, value in changes.items()}
    updated = await repo.update_video(session, video_id, values)
    if updated is None:  # deleted meanwhile
        raise VideoNotFound()
    return updated


async def delete_video(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor, storage: Storage) -> None:
    """Delete the row now and the video's objects once that is committed.

    Order: the row first, so no one can ever be shown a video whose files are already gone; the
    objects after the commit, so a rolled-back delete never loses files. If the object removal
    fails after the commit, the objects are orphans that no row points to (logged with their
    prefixes; ``purge_video_objects`` is idempotent and can be re-run by a sweep).
    """
    video = await managed_video(session, video_id, actor=actor)
    if not await repo.delete_video(session, video_id):
        raise VideoNotFound()
    await _event(session, "catalog.video_deleted", video, {}, key=str(video_id))
    after_commit(session, partial(_purge_after_delete, storage, video_id))


async def purge_video_objects(storage: Storage, video_id: uuid.UUID) -> int:
    """Remove every object of the video (HLS output, thumbnail, uploaded original, unfinished
    multipart uploads); safe to repeat. Returns how many objects were removed."""
    removed = await storage.delete_prefix(video_prefix(video_id))
    thumbnail = thumbnail_key(video_id)
    if await storage.exists(thumbnail):
        await storage.delete(thumbnail)
        removed += 1
    removed += await storage.delete_prefix(upload_prefix(video_id))
    for upload in await storage.list_multipart_uploads(upload_prefix(video_id)):
        await storage.abort_multipart(upload.key, upload.upload_id)
    return removed


async def _purge_after_delete(storage: Storage, video_id: uuid.UUID) -> None:
    try:
        removed = await purge_video_objects(storage, video_id)
    except StorageError:
        log.exception(
            "video_objects_orphaned",
            video_id=str(video_id),
            prefixes=[video_prefix(video_id), thumbnail_key(video_id), upload_prefix(video_id)],
        )
        return
    log.info("video_objects_deleted", video_id=str(video_id), objects=removed)


async def list_public_videos(
    session: AsyncSession,
    *,
    creator_id: uuid.UUID | None,
    query: str | None,
    sort: Sort,
    cursor: str | None,
    limit: int,
) -> Page[Video]:
    """Public, ready videos (a channel's when ``creator_id`` is given), newest or most viewed first."""
    ordering = Ordering.published if sort is Sort.newest else Ordering.views
    videos = await repo.list_videos(
        session,
        scope=repo.VideoScope(public_only=True, creator_id=creator_id),
        ordering=ordering,
        after=_position(cursor, ordering),
        limit=limit + 1,
        query=query,
    )
    return _video_page(videos, ordering=ordering, limit=limit)


async def list_studio_videos(
    session: AsyncSession, *, actor: Actor, query: str | None, sort: Sort, cursor: str | None, limit: int
) -> Page[Video]:
    """Every video of the caller, whatever its status or visibility (the creator's studio)."""
    ordering = Ordering.created if sort is Sort.newest else Ordering.views
    videos = await repo.list_videos(
        session,
        scope=repo.VideoScope(public_only=False, creator_id=actor.user_id),
        ordering=ordering,
        after=_position(cursor, ordering),
        limit=limit + 1,
        query=query,
    )
    return _video_page(videos, ordering=ordering, limit=limit)


async def search_videos(session: AsyncSession, *, query: str, cursor: str | None, limit: int) -> Page[Video]:
    """Public, ready videos by relevance: a title match outranks a tag match outranks a description match."""
    rows = await repo.search_videos(
        session, query=query, after=_position(cursor, Ordering.rank), limit=limit + 1
    )
    if len(rows) <= limit:
        return Page(items=[video for video, _ in rows], next_cursor=None)
    rows = rows[:limit]
    last, rank = rows[-1]
    return Page(items=[video for video, _ in rows], next_cursor=encode_cursor(Ordering.rank, rank, last.id))


async def thumbnail_of(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor | None) -> str:
    """The storage key of the video's thumbnail, for a caller who may see the video."""
    video = await visible_video(session, video_id, actor=actor)
    if not video.thumbnail_key:
        raise ThumbnailNotFound()
    return video.thumbnail_key


# --- comments ----------------------------------------------------------------------------------


async def create_comment(
    session: AsyncSession, video_id: uuid.UUID, *, actor: Actor, data: CommentCreate
) -> Comment:
    # The video's row lock orders this against other comment writes and the video's deletion.
    video = await visible_video(session, video_id, actor=actor, lock=True)
    _require_ready(video)
    if data.parent_id is not None and not await repo.add_reply(
        session, video_id=video_id, parent_id=data.parent_id
    ):
        parent = await repo.get_comment(session, video_id, data.parent_id)
        raise ParentNotFound() if parent is None else ReplyDepth()
    comment = await repo.insert_comment(
        session,
        video_id=video_id,
        author_id=actor.user_id,
        author_name=actor.name,
        parent_id=data.parent_id,
        body=data.body,
    )
    await repo.add_video_counters(session, video_id, comments=1)
    await _event(
        session,
        "catalog.comment_created",
        video,
        {"comment_id": str(comment.id), "author_id": str(actor.user_id)},
        key=str(comment.id),
        occurred_at=comment.created_at,
    )
    return comment


async def list_comments(
    session: AsyncSession,
    video_id: uuid.UUID,
    *,
    actor: Actor | None,
    parent_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> Page[Comment]:
    await visible_video(session, video_id, actor=actor)
    if parent_id is not None:
        parent = await repo.get_comment(session, video_id, parent_id)
        if parent is None:
            raise CommentNotFound()
    comments = await repo.list_comments(
        session,
        video_id=video_id,
        parent_id=parent_id,
        after=_position(cursor, Ordering.created),
        limit=limit + 1,
    )
    if len(comments) <= limit:
        return Page(items=comments, next_cursor=None)
    comments = comments[:limit]
    last = comments[-1]
    return Page(items=comments, next_cursor=encode_cursor(Ordering.created, last.created_at, last.id))


async def update_comment(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, actor: Actor, body: str
) -> Comment:
    await visible_video(session, video_id, actor=actor)
    comment = await repo.get_comment(session, video_id, comment_id)
    if comment is None:
        raise CommentNotFound()
    if comment.author_id != actor.user_id:
        raise NotAuthor()
    updated = await repo.update_comment_body(session, comment_id, body)
    if updated is None:
        raise CommentNotFound()
    return updated


async def delete_comment(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, actor: Actor
) -> None:
    """Delete a comment (with its replies); its author or an admin may."""
    await visible_video(session, video_id, actor=actor, lock=True)
    comment = await repo.get_comment(session, video_id, comment_id)
    if comment is None:
        raise CommentNotFound()
    if comment.author_id != actor.user_id and not actor.is_admin:
        raise NotAuthor()
    removed = await repo.delete_comment_thread(session, comment_id)
    if removed == 0:
        raise CommentNotFound()
    if comment.parent_id is not None:
        await repo.remove_reply(session, comment.parent_id)
    await repo.add_video_counters(session, video_id, comments=-removed)


# --- reactions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReactionState:
    reaction: ReactionKind | None
    likes: int
    dislikes: int


async def _move_video_counters(
    session: AsyncSession, video: Video, change: repo.ReactionChange, *, user_id: uuid.UUID
) -> Video:
    if change == repo.ReactionChange():
        return video
    # Each change of a user's reaction is its own fact (like, then none, then like again): no
    # natural key, so a fresh id.
    await _event(
        session,
        "catalog.reaction_set",
        video,
        {"user_id": str(user_id), "reaction": change.added.value if change.added else None},
    )
    updated = await repo.add_video_counters(
        session,
        video.id,
        likes=change.delta(ReactionKind.like),
        dislikes=change.delta(ReactionKind.dislike),
    )
    assert updated is not None  # the row is locked by this transaction
    return updated


async def react_to_video(
    session: AsyncSession, video_id: uuid.UUID, *, actor: Actor, kind: ReactionKind
) -> ReactionState:
    video = await visible_video(session, video_id, actor=actor, lock=True)
    _require_ready(video)
    change = await repo.put_reaction(
        session, VideoReaction, target_id=video_id, user_id=actor.user_id, kind=kind
    )
    video = await _move_video_counters(session, video, change, user_id=actor.user_id)
    return ReactionState(reaction=kind, likes=video.like_count, dislikes=video.dislike_count)


async def remove_video_reaction(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor) -> ReactionState:
    video = await visible_video(session, video_id, actor=actor, lock=True)
    change = await repo.delete_reaction(session, VideoReaction, target_id=video_id, user_id=actor.user_id)
    video = await _move_video_counters(session, video, change, user_id=actor.user_id)
    return ReactionState(reaction=None, likes=video.like_count, dislikes=video.dislike_count)


async def _locked_comment(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, actor: Actor
) -> Comment:
    await visible_video(session, video_id, actor=actor)
    comment = await repo.get_comment(session, video_id, comment_id, lock=True)
    if comment is None:
        raise CommentNotFound()
    return comment


async def _move_comment_counters(
    session: AsyncSession, comment: Comment, change: repo.ReactionChange
) -> Comment:
    if change == repo.ReactionChange():
        return comment
    updated = await repo.add_comment_counters(
        session,
        comment.id,
        likes=change.delta(ReactionKind.like),
        dislikes=change.delta(ReactionKind.dislike),
    )
    assert updated is not None
    return updated


async def react_to_comment(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, actor: Actor, kind: ReactionKind
) -> ReactionState:
    comment = await _locked_comment(session, video_id, comment_id, actor=actor)
    change = await repo.put_reaction(
        session, CommentReaction, target_id=comment_id, user_id=actor.user_id, kind=kind
    )
    comment = await _move_comment_counters(session, comment, change)
    return ReactionState(reaction=kind, likes=comment.like_count, dislikes=comment.dislike_count)


async def remove_comment_reaction(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, actor: Actor
) -> ReactionState:
    comment = await _locked_comment(session, video_id, comment_id, actor=actor)
    change = await repo.delete_reaction(session, CommentReaction, target_id=comment_id, user_id=actor.user_id)
    comment = await _move_comment_counters(session, comment, change)
    return ReactionState(reaction=None, likes=comment.like_count, dislikes=comment.dislike_count)


# --- lifecycle: the upload code's and the transcoder's hand-offs -----------------------------------


async def _transition(
    session: AsyncSession,
    video_id: uuid.UUID,
    to: VideoStatus,
    *,
    from_statuses: Sequence[VideoStatus] | None = None,
    values: dict[str, Any] | None = None,
) -> Video:
    """Move the video to ``to``, or raise 404 / 409 invalid_transition saying where it is instead."""
    legal = sources_of(to)
    sources = list(from_statuses) if from_statuses is not None else legal
    assert set(sources) <= set(legal), f"{sources} -> {to} is not in TRANSITIONS"
    video = await repo.transition_video(session, video_id, from_statuses=sources, to=to, values=values)
    if video is not None:
        return video
    current = await repo.get_video(session, video_id)
    if current is None:
        raise VideoNotFound()
    raise InvalidTransition(
        f"A video that is {current.status} cannot become {to.value}.",
        current_status=current.status,
        requested_status=to.value,
    )


async def _idempotent_transition(
    session: AsyncSession, video_id: uuid.UUID, to: VideoStatus, *, values: dict[str, Any] | None = None
) -> Video:
    """Like ``_transition``, but a video already in ``to`` is returned unchanged."""
    try:
        return await _transition(session, video_id, to, values=values)
    except InvalidTransition:
        current = await repo.get_video(session, video_id)
        if current is not None and current.status == to.value:
            return current
        raise


async def authorize_upload(session: AsyncSession, video_id: uuid.UUID, *, actor: Actor) -> Video:
    """The video ``actor`` may upload its file to: only its creator, and only before it was uploaded."""
    video = await visible_video(session, video_id, actor=actor)
    if video.creator_id != actor.user_id:
        raise NotOwner("Only the video's creator may upload its file.")
    if video.status not in (VideoStatus.awaiting_upload.value, VideoStatus.uploading.value):
        raise InvalidTransition(
            f"This video's file was already uploaded (it is {video.status}).",
            current_status=video.status,
            requested_status=VideoStatus.uploading.value,
        )
    return video


async def mark_upload_started(session: AsyncSession, video_id: uuid.UUID) -> Video:
    """awaiting_upload -> uploading (first bytes or tus creation); repeating it is harmless."""
    return await _idempotent_transition(session, video_id, VideoStatus.uploading)


async def mark_upload_abandoned(session: AsyncSession, video_id: uuid.UUID) -> Video:
    """uploading -> awaiting_upload (tus termination, expired upload): the creator may upload again."""
    return await _idempotent_transition(session, video_id, VideoStatus.awaiting_upload)


async def fail_upload(session: AsyncSession, video_id: uuid.UUID, *, reason: str) -> Video:
    """uploading -> failed with a readable reason (e.g. ffprobe found no video stream)."""
    return await _transition(
        session,
        video_id,
        VideoStatus.failed,
        from_statuses=[VideoStatus.uploading],
        values={"failure_reason": reason},
    )


OnCommitted = Callable[[uuid.UUID], Awaitable[object]]


async def mark_uploaded(
    session: AsyncSession, video_id: uuid.UUID, *, source_key: str, on_committed: OnCommitted
) -> Video:
    """The file is stored at ``source_key``: awaiting_upload/uploading -> processing (progress 0).

    ``on_committed(video_id)`` runs once this transaction has committed (see commit_hooks), never
    before and never after a rollback; the upload code passes ``partial(tasks.enqueue_transcode,
    pool)``. Calling this again for a video already processing the same source registers the
    hook again (a retried hand-off re-enqueues; the job id de-duplicates), and changes nothing.
    """
    _check_key(source_key, under=upload_prefix(video_id))
    try:
        video = await _transition(
            session,
            video_id,
            VideoStatus.processing,
            values={"progress": 0, "source_key": source_key, "failure_reason": None},
        )
    except InvalidTransition:
        current = await repo.get_video(session, video_id)
        if (
            current is None
            or current.status != VideoStatus.processing.value
            or current.source_key != source_key
        ):
            raise
        video = current
    after_commit(session, partial(on_committed, video_id))
    return video


async def record_progress(session: AsyncSession, video_id: uuid.UUID, *, progress: int) -> Video:
    """The transcoder's progress; accepted only while processing, and never moves backwards."""
    video = await repo.raise_progress(session, video_id, progress)
    if video is not None:
        return video
    if await repo.get_video(session, video_id) is None:
        raise VideoNotFound()
    raise NotProcessing()


def _check_key(key: str, *, under: str, exactly: str | None = None) -> None:
    """A key this video owns: ``exactly`` or below the folder ``under`` (so deleting finds it)."""
    try:
        validate_key(key)
    except InvalidKey as exc:
        raise InvalidStorageKey(str(exc)) from exc
    if key != exactly and not key.startswith(under):
        allowed = f"{exactly} or a key under {under}" if exactly else f"a key under {under}"
        raise InvalidStorageKey(f"The key must be {allowed}.")


def _same_result(video: Video, result: TranscodeResult) -> bool:
    if video.status != result.status:
        return False
    if result.status == "failed":
        return video.failure_reason == result.failure_reason
    return (
        video.duration_s == result.duration_s
        and video.renditions == [rendition.model_dump() for rendition in result.renditions]
        and video.thumbnail_key == result.thumbnail_key
    )


async def record_transcode_result(
    session: AsyncSession, video_id: uuid.UUID, *, result: TranscodeResult
) -> Video:
    """processing -> ready | failed. The same result again is accepted (200, nothing changes); a
    different one after the video reached a final status is a conflict (409 result_conflict)."""
    if result.thumbnail_key is not None:
        _check_key(result.thumbnail_key, under=video_prefix(video_id), exactly=thumbnail_key(video_id))
    if result.status == "ready":
        target = VideoStatus.ready
        values: dict[str, Any] = {
            "progress": None,
            "duration_s": result.duration_s,
            "renditions": [rendition.model_dump() for rendition in result.renditions],
            "thumbnail_key": result.thumbnail_key,
            "failure_reason": None,
            "published_at": func.now(),
        }
    else:
        target = VideoStatus.failed
        values = {"progress": None, "failure_reason": result.failure_reason}
    try:
        video = await _transition(
            session, video_id, target, from_statuses=[VideoStatus.processing], values=values
        )
    except InvalidTransition:
        current = await repo.get_video(session, video_id)
        if current is None:
            raise VideoNotFound() from None
        if _same_result(current, result):
            return current
        if current.status in (VideoStatus.ready.value, VideoStatus.failed.value):
            raise ResultConflict(current_status=current.status) from None
        raise
    # Only the transition itself reports: a repeated result changed nothing and says nothing.
    if video.status == VideoStatus.ready.value:
        await _event(
            session,
            "catalog.video_ready",
            video,
            {
                "duration_s": video.duration_s,
                "renditions": [rendition["name"] for rendition in video.renditions],
            },
            key=str(video_id),
            occurred_at=video.published_at,
        )
    else:
        await _event(
            session, "catalog.video_failed", video, {"reason": video.failure_reason}, key=str(video_id)
        )
    log.info("transcode_result_recorded", video_id=str(video_id), status=video.status)
    return video


async def _event(
    session: AsyncSession,
    type_: str,
    video: Video,
    payload: dict[str, Any],
    *,
    key: str | None = None,
    occurred_at: datetime | None = None,
) -> None:
    """Stage a fact about ``video`` in this transaction's outbox (every catalog event names the
    video and its creator)."""
    event = new_event(
        type_,
        {"video_id": str(video.id), "creator_id": str(video.creator_id), **payload},
        producer=SOURCE,
        key=key,
        occurred_at=occurred_at,
    )
    await stage(session, event)


async def add_views(session: AsyncSession, video_id: uuid.UUID, *, count: int) -> Video:
    """Counted by streaming/analytics; feeds the most_viewed ordering."""
    video = await repo.add_video_counters(session, video_id, views=count)
    if video is None:
        raise VideoNotFound()
    return video


async def get_video_internal(session: AsyncSession, video_id: uuid.UUID) -> Video:
    video = await repo.get_video(session, video_id)
    if video is None:
        raise VideoNotFound()
    return video
