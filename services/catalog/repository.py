"""Every catalog query.

Writes that race are single statements decided by the database: status changes are
compare-and-set UPDATEs (``WHERE status IN (...)``), reactions are decided by the primary key
(``ON CONFLICT DO NOTHING``), and counters move by the deltas that the reaction/comment
statements' RETURNING clauses report, in the same transaction, as ``col = col + :delta``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.catalog.models import (
    SEARCH_CONFIG,
    Comment,
    CommentReaction,
    ReactionKind,
    Upload,
    UploadState,
    Video,
    VideoReaction,
    VideoStatus,
    Visibility,
    search_vector,
)
from services.catalog.pagination import Ordering, Position

# --- videos ------------------------------------------------------------------------------------


async def insert_video(session: AsyncSession, **values: Any) -> Video:
    statement = pg_insert(Video).values(id=uuid.uuid4(), **values).returning(Video)
    return (await session.scalars(statement)).one()


async def get_video(session: AsyncSession, video_id: uuid.UUID, *, lock: bool = False) -> Video | None:
    """The video; ``lock`` takes its row lock (FOR NO KEY UPDATE) until the transaction ends.

    Every write that moves a video's counters or children locks the video row first, so they all
    queue in one order (video, then comment, then reactions) and can never deadlock each other.
    """
    statement = select(Video).where(col(Video.id) == video_id).execution_options(populate_existing=True)
    if lock:
        statement = statement.with_for_update(key_share=True)
    return (await session.scalars(statement)).one_or_none()


async def update_video(session: AsyncSession, video_id: uuid.UUID, values: dict[str, Any]) -> Video | None:
    statement = (
        update(Video)
        .where(col(Video.id) == video_id)
        .values(**values, updated_at=func.now())
        .returning(Video)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def transition_video(
    session: AsyncSession,
    video_id: uuid.UUID,
    *,
    from_statuses: Sequence[VideoStatus],
    to: VideoStatus,
    values: dict[str, Any] | None = None,
) -> Video | None:
    """Compare-and-set: the video moved to ``to``, or None when it was not in ``from_statuses``."""
    statement = (
        update(Video)
        .where(col(Video.id) == video_id, col(Video.status).in_([s.value for s in from_statuses]))
        .values(status=to.value, updated_at=func.now(), **(values or {}))
        .returning(Video)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def raise_progress(session: AsyncSession, video_id: uuid.UUID, progress: int) -> Video | None:
    """Progress only moves forward (late or retried reports are ignored); None unless processing."""
    statement = (
        update(Video)
        .where(col(Video.id) == video_id, col(Video.status) == VideoStatus.processing.value)
        # updated_at moves too: the stall sweep reads it as when the transcoder was last heard of.
        .values(
            progress=func.greatest(func.coalesce(col(Video.progress), 0), progress), updated_at=func.now()
        )
        .returning(Video)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def stalled_videos(session: AsyncSession, *, quiet_since: datetime, limit: int) -> list[uuid.UUID]:
    """Videos processing with no word from a transcoder since ``quiet_since``, oldest first."""
    statement = (
        select(col(Video.id))
        .where(col(Video.status) == VideoStatus.processing.value, col(Video.updated_at) < quiet_since)
        .order_by(col(Video.updated_at))
        .limit(limit)
    )
    return list((await session.scalars(statement)).all())


async def claim_stalled(
    session: AsyncSession, video_id: uuid.UUID, *, quiet_since: datetime, restart: bool
) -> Video | None:
    """Mark a stalled video as seen now (and one restart more when ``restart``); None when it is no
    longer processing or was heard of meanwhile (another replica's sweep, a late report)."""
    values: dict[str, Any] = {"updated_at": func.now()}
    if restart:
        values["transcode_restarts"] = col(Video.transcode_restarts) + 1
    statement = (
        update(Video)
        .where(
            col(Video.id) == video_id,
            col(Video.status) == VideoStatus.processing.value,
            col(Video.updated_at) < quiet_since,
        )
        .values(**values)
        .returning(Video)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def delete_video(session: AsyncSession, video_id: uuid.UUID) -> bool:
    """Remove the row (comments and reactions go with it, by ON DELETE CASCADE)."""
    statement = delete(Video).where(col(Video.id) == video_id).returning(col(Video.id))
    return (await session.execute(statement)).first() is not None


async def add_video_counters(
    session: AsyncSession,
    video_id: uuid.UUID,
    *,
    likes: int = 0,
    dislikes: int = 0,
    comments: int = 0,
    views: int = 0,
) -> Video | None:
    """Move denormalised counters by deltas the caller got from a RETURNING clause."""
    statement = (
        update(Video)
        .where(col(Video.id) == video_id)
        .values(
            like_count=col(Video.like_count) + likes,
            dislike_count=col(Video.dislike_count) + dislikes,
            comment_count=col(Video.comment_count) + comments,
            view_count=col(Video.view_count) + views,
        )
        .returning(Video)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


@dataclass(frozen=True, slots=True)
class VideoScope:
    """Which videos a list may show: public lists hold public + ready videos only."""

    public_only: bool = True
    creator_id: uuid.UUID | None = None


def _search_query(query: str) -> ColumnElement[Any]:
    # websearch_to_tsquery never fails on user input ("quoted phrases", or, -not) and the
    # configuration is a constant, so the GIN index on search_vector answers the match.
    return func.websearch_to_tsquery(literal_column(f"'{SEARCH_CONFIG}'::regconfig"), query)


def _scoped(statement: Select[Any], scope: VideoScope, query: str | None) -> Select[Any]:
    if scope.public_only:
        statement = statement.where(
            col(Video.visibility) == Visibility.public.value, col(Video.status) == VideoStatus.ready.value
        )
    if scope.creator_id is not None:
        statement = statement.where(col(Video.creator_id) == scope.creator_id)
    if query is not None:
        statement = statement.where(search_vector.op("@@")(_search_query(query)))
    return statement


_SORT_COLUMNS: dict[Ordering, Any] = {
    Ordering.published: col(Video.published_at),
    Ordering.created: col(Video.created_at),
    Ordering.views: col(Video.view_count),
}


async def list_videos(
    session: AsyncSession,
    *,
    scope: VideoScope,
    ordering: Ordering,
    after: Position | None,
    limit: int,
    query: str | None = None,
) -> list[Video]:
    """One page in ``ordering`` (descending, ties broken by id descending), after ``after``."""
    key = _SORT_COLUMNS[ordering]
    statement = _scoped(select(Video), scope, query)
    if after is not None:
        statement = statement.where(tuple_(key, col(Video.id)) < tuple_(after.value, after.id))
    statement = statement.order_by(key.desc(), col(Video.id).desc()).limit(limit)
    return list((await session.scalars(statement)).all())


async def search_videos(
    session: AsyncSession, *, query: str, after: Position | None, limit: int
) -> list[tuple[Video, float]]:
    """Public, ready videos matching ``query``, most relevant first (ts_rank over the weighted vector)."""
    tsquery = _search_query(query)
    rank = func.ts_rank(search_vector, tsquery)
    statement = _scoped(select(Video, rank.label("rank")), VideoScope(public_only=True), query)
    if after is not None:
        statement = statement.where(tuple_(rank, col(Video.id)) < tuple_(after.value, after.id))
    statement = statement.order_by(rank.desc(), col(Video.id).desc()).limit(limit)
    rows = (await session.execute(statement)).all()
    return [(row[0], float(row[1])) for row in rows]


# --- comments ----------------------------------------------------------------------------------


async def insert_comment(
    session: AsyncSession,
    *,
    video_id: uuid.UUID,
    author_id: uuid.UUID,
    author_name: str | None,
    parent_id: uuid.UUID | None,
    body: str,
) -> Comment:
    statement = (
        pg_insert(Comment)
        .values(
            id=uuid.uuid4(),
            video_id=video_id,
            author_id=author_id,
            author_name=author_name,
            parent_id=parent_id,
            body=body,
        )
        .returning(Comment)
    )
    return (await session.scalars(statement)).one()


async def get_comment(
    session: AsyncSession, video_id: uuid.UUID, comment_id: uuid.UUID, *, lock: bool = False
) -> Comment | None:
    statement = (
        select(Comment)
        .where(col(Comment.id) == comment_id, col(Comment.video_id) == video_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        statement = statement.with_for_update(key_share=True)
    return (await session.scalars(statement)).one_or_none()


async def add_reply(session: AsyncSession, *, video_id: uuid.UUID, parent_id: uuid.UUID) -> bool:
    """Count one more reply on ``parent_id``; False unless it is a top-level comment of the video.

    The UPDATE also locks the parent, so a reply and the parent's deletion cannot interleave.
    """
    statement = (
        update(Comment)
        .where(
            col(Comment.id) == parent_id,
            col(Comment.video_id) == video_id,
            col(Comment.parent_id).is_(None),
        )
        .values(reply_count=col(Comment.reply_count) + 1)
        .returning(col(Comment.id))
    )
    return (await session.execute(statement)).first() is not None


async def remove_reply(session: AsyncSession, parent_id: uuid.UUID) -> None:
    statement = (
        update(Comment).where(col(Comment.id) == parent_id).values(reply_count=col(Comment.reply_count) - 1)
    )
    await session.execute(statement)


async def update_comment_body(session: AsyncSession, comment_id: uuid.UUID, body: str) -> Comment | None:
    statement = (
        update(Comment)
        .where(col(Comment.id) == comment_id)
        .values(body=body, updated_at=func.now(), edited_at=func.now())
        .returning(Comment)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def delete_comment_thread(session: AsyncSession, comment_id: uuid.UUID) -> int:
    """Delete the comment and its replies in one statement; how many rows went (for comment_count)."""
    statement = (
        delete(Comment)
        .where(or_(col(Comment.id) == comment_id, col(Comment.parent_id) == comment_id))
        .returning(col(Comment.id))
    )
    return len((await session.execute(statement)).all())


async def list_comments(
    session: AsyncSession,
    *,
    video_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    after: Position | None,
    limit: int,
) -> list[Comment]:
    """Top-level comments newest first, or one comment's replies oldest first (a conversation)."""
    statement = select(Comment).where(col(Comment.video_id) == video_id)
    key = tuple_(col(Comment.created_at), col(Comment.id))
    if parent_id is None:
        statement = statement.where(col(Comment.parent_id).is_(None))
        if after is not None:
            statement = statement.where(key < tuple_(after.value, after.id))
        statement = statement.order_by(col(Comment.created_at).desc(), col(Comment.id).desc())
    else:
        statement = statement.where(col(Comment.parent_id) == parent_id)
        if after is not None:
            statement = statement.where(key > tuple_(after.value, after.id))
        statement = statement.order_by(col(Comment.created_at).asc(), col(Comment.id).asc())
    return list((await session.scalars(statement.limit(limit))).all())


async def add_comment_counters(
    session: AsyncSession, comment_id: uuid.UUID, *, likes: int, dislikes: int
) -> Comment | None:
    statement = (
        update(Comment)
        .where(col(Comment.id) == comment_id)
        .values(
            like_count=col(Comment.like_count) + likes,
            dislike_count=col(Comment.dislike_count) + dislikes,
        )
        .returning(Comment)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


# --- reactions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReactionChange:
    """What the reaction statements actually changed, as reported by their RETURNING clauses."""

    removed: ReactionKind | None = None
    added: ReactionKind | None = None

    def delta(self, kind: ReactionKind) -> int:
        return int(self.added is kind) - int(self.removed is kind)


ReactionModel = type[VideoReaction] | type[CommentReaction]


def _target(model: ReactionModel, target_id: uuid.UUID, user_id: uuid.UUID) -> list[ColumnElement[bool]]:
    target = col(VideoReaction.video_id) if model is VideoReaction else col(CommentReaction.comment_id)
    return [target == target_id, col(model.user_id) == user_id]


async def put_reaction(
    session: AsyncSession,
    model: ReactionModel,
    *,
    target_id: uuid.UUID,
    user_id: uuid.UUID,
    kind: ReactionKind,
) -> ReactionChange:
    """Make the user's reaction ``kind``: switch an opposite one, insert a missing one, or nothing."""
    switched = await session.execute(
        update(model)
        .where(*_target(model, target_id, user_id), col(model.kind) != kind.value)
        .values(kind=kind.value, created_at=func.now())
        .returning(col(model.kind))
    )
    if switched.first() is not None:
        # Only two kinds exist, so the row that was not ``kind`` held the other one.
        other = ReactionKind.dislike if kind is ReactionKind.like else ReactionKind.like
        return ReactionChange(removed=other, added=kind)
    target_column = "video_id" if model is VideoReaction else "comment_id"
    inserted = await session.execute(
        pg_insert(model)
        .values({target_column: target_id, "user_id": user_id, "kind": kind.value})
        .on_conflict_do_nothing()
        .returning(col(model.kind))
    )
    return ReactionChange(added=kind) if inserted.first() is not None else ReactionChange()


async def delete_reaction(
    session: AsyncSession, model: ReactionModel, *, target_id: uuid.UUID, user_id: uuid.UUID
) -> ReactionChange:
    row = (
        await session.execute(
            delete(model).where(*_target(model, target_id, user_id)).returning(col(model.kind))
        )
    ).first()
    return ReactionChange(removed=ReactionKind(row[0])) if row is not None else ReactionChange()


async def get_reaction(
    session: AsyncSession, model: ReactionModel, *, target_id: uuid.UUID, user_id: uuid.UUID
) -> ReactionKind | None:
    value = await session.scalar(select(col(model.kind)).where(*_target(model, target_id, user_id)))
    return ReactionKind(value) if value is not None else None


# --- uploads -----------------------------------------------------------------------------------


async def insert_upload(session: AsyncSession, **values: Any) -> Upload:
    statement = pg_insert(Upload).values(id=uuid.uuid4(), **values).returning(Upload)
    return (await session.scalars(statement)).one()


async def get_upload(session: AsyncSession, upload_id: uuid.UUID) -> Upload | None:
    statement = select(Upload).where(col(Upload.id) == upload_id).execution_options(populate_existing=True)
    return (await session.scalars(statement)).one_or_none()


async def get_upload_for_video(session: AsyncSession, video_id: uuid.UUID) -> Upload | None:
    statement = (
        select(Upload).where(col(Upload.video_id) == video_id).execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def delete_upload(session: AsyncSession, upload_id: uuid.UUID, *, state: UploadState) -> bool:
    """Remove the upload if it is still in ``state`` (so a racing completion is never undone)."""
    statement = (
        delete(Upload)
        .where(col(Upload.id) == upload_id, col(Upload.state) == state.value)
        .returning(col(Upload.id))
    )
    return (await session.execute(statement)).first() is not None


async def advance_upload(
    session: AsyncSession,
    upload_id: uuid.UUID,
    *,
    from_offset: int,
    to_offset: int,
    tail_size: int,
    tail_key: str | None,
    part: dict[str, Any] | None,
    expires_at: datetime,
) -> Upload | None:
    """Compare-and-set: record newly stored bytes (a part, and/or the tail's new size).

    None when the upload is no longer active at ``from_offset`` (another writer moved it, or it
    was terminated): the caller's bytes must then not be counted.
    """
    values: dict[str, Any] = {
        "upload_offset": to_offset,
        "tail_size": tail_size,
        "tail_key": tail_key,
        "expires_at": expires_at,
        "updated_at": func.now(),
    }
    if part is not None:
        values["parts"] = col(Upload.parts).op("||", return_type=JSONB)(bindparam(None, [part], type_=JSONB))
    statement = (
        update(Upload)
        .where(
            col(Upload.id) == upload_id,
            col(Upload.state) == UploadState.active.value,
            col(Upload.upload_offset) == from_offset,
        )
        .values(**values)
        .returning(Upload)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def reserve_part_number(session: AsyncSession, upload_id: uuid.UUID) -> int | None:
    """A part number no writer of this upload has used yet; None when the upload is not active."""
    statement = (
        update(Upload)
        .where(col(Upload.id) == upload_id, col(Upload.state) == UploadState.active.value)
        .values(part_numbers_used=col(Upload.part_numbers_used) + 1)
        .returning(col(Upload.part_numbers_used))
    )
    value = (await session.execute(statement)).scalar_one_or_none()
    return int(value) if value is not None else None


async def complete_upload(session: AsyncSession, upload_id: uuid.UUID) -> Upload | None:
    """active (with every byte stored) -> completed; None when it was not in that state."""
    statement = (
        update(Upload)
        .where(
            col(Upload.id) == upload_id,
            col(Upload.state) == UploadState.active.value,
            col(Upload.upload_offset) == col(Upload.length),
        )
        .values(
            state=UploadState.completed.value,
            tail_size=0,
            tail_key=None,
            multipart_id=None,
            completed_at=func.now(),
            updated_at=func.now(),
        )
        .returning(Upload)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def list_expired_uploads(session: AsyncSession, *, now: datetime, limit: int) -> list[Upload]:
    statement = (
        select(Upload)
        .where(col(Upload.state) == UploadState.active.value, col(Upload.expires_at) < now)
        .order_by(col(Upload.expires_at))
        .limit(limit)
    )
    return list((await session.scalars(statement)).all())


async def multipart_ids_in_use(session: AsyncSession, multipart_ids: Sequence[str]) -> set[str]:
    """Which of these storage multipart upload ids an active upload still writes to."""
    if not multipart_ids:
        return set()
    statement = select(col(Upload.multipart_id)).where(
        col(Upload.state) == UploadState.active.value, col(Upload.multipart_id).in_(list(multipart_ids))
    )
    return {str(value) for value in (await session.scalars(statement)).all() if value is not None}


async def set_upload_expiry(session: AsyncSession, upload_id: uuid.UUID, expires_at: datetime) -> None:
    statement = (
        update(Upload)
        .where(col(Upload.id) == upload_id, col(Upload.state) == UploadState.active.value)
        .values(expires_at=expires_at)
    )
    await session.execute(statement)
