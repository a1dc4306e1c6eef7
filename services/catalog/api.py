"""Catalog routes (served without the /api/v1 prefix, which the gateway strips): thin, they parse,
call the service and shape the response. ``/internal/*`` is for other services only (the gateway
never routes it, and every route there needs a service credential)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from common.commit_hooks import HookedSessionDep
from common.errors import Unauthorized
from common.identity import CurrentIdentity, OptionalIdentity
from common.internal import CallingService, require_service
from common.storage import LocalStorage, Storage
from services.catalog import service
from services.catalog.errors import ThumbnailNotFound
from services.catalog.models import Comment, Video, VideoStatus
from services.catalog.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from services.catalog.schemas import (
    CommentCreate,
    CommentPage,
    CommentRead,
    CommentUpdate,
    ProgressRead,
    ProgressUpdate,
    ReactionRead,
    ReactionUpdate,
    SearchQuery,
    TranscodeResult,
    VideoCreate,
    VideoCreated,
    VideoInternalRead,
    VideoPage,
    VideoRead,
    VideoUpdate,
    ViewsIncrement,
)
from services.catalog.service import Actor, Page, ReactionState, Sort
from services.catalog.settings import CatalogSettings

SessionDep = HookedSessionDep


def current_actor(identity: CurrentIdentity) -> Actor:
    return Actor.from_identity(identity)


def optional_actor(identity: OptionalIdentity) -> Actor | None:
    return Actor.from_identity(identity) if identity is not None else None


def get_settings(request: Request) -> CatalogSettings:
    settings: CatalogSettings = request.app.state.settings
    return settings


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


ActorDep = Annotated[Actor, Depends(current_actor)]
OptionalActorDep = Annotated[Actor | None, Depends(optional_actor)]
SettingsDep = Annotated[CatalogSettings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
TranscoderDep = Annotated[str, Depends(require_service("transcoder", "catalog"))]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=512)]

videos_router = APIRouter(prefix="/videos", tags=["videos"])
search_router = APIRouter(tags=["videos"])
internal_router = APIRouter(prefix="/internal/videos", tags=["internal"])


def _video_page(page: Page[Video], settings: CatalogSettings) -> VideoPage:
    return VideoPage(
        items=[VideoRead.from_model(video, api_prefix=settings.public_api_prefix) for video in page.items],
        next_cursor=page.next_cursor,
    )


def _comment_page(page: Page[Comment]) -> CommentPage:
    return CommentPage(items=[CommentRead.from_model(c) for c in page.items], next_cursor=page.next_cursor)


def _reaction(state: ReactionState) -> ReactionRead:
    return ReactionRead(reaction=state.reaction, likes=state.likes, dislikes=state.dislikes)


# --- videos ------------------------------------------------------------------------------------


@videos_router.post("", status_code=201, response_model=VideoCreated)
async def create_video(
    body: VideoCreate, session: SessionDep, actor: ActorDep, settings: SettingsDep, response: Response
) -> VideoCreated:
    """Create a video (creators and admins); then upload its file with tus to ``upload_url``."""
    video = await service.create_video(session, actor=actor, data=body)
    read = VideoRead.from_model(video, api_prefix=settings.public_api_prefix)
    response.headers["Location"] = f"{settings.public_api_prefix}/videos/{video.id}"
    return VideoCreated(
        **read.model_dump(),
        upload_url=f"{settings.public_api_prefix}/uploads",
        upload_metadata={"video_id": str(video.id)},
    )


@videos_router.get("", response_model=VideoPage)
async def list_videos(
    session: SessionDep,
    actor: OptionalActorDep,
    settings: SettingsDep,
    q: Annotated[SearchQuery | None, Query(description="Full-text filter")] = None,
    creator: Annotated[
        uuid.UUID | Literal["me"] | None,
        Query(description="A channel (creator id), or 'me' for your studio: all your videos, any status"),
    ] = None,
    sort: Sort = Sort.newest,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> VideoPage:
    """Public, ready videos (newest or most viewed first); ``creator=me`` lists your own studio."""
    if creator == "me":
        if actor is None:
            raise Unauthorized("Sign in to see your studio.", code="not_authenticated")
        page = await service.list_studio_videos(
            session, actor=actor, query=q, sort=sort, cursor=cursor, limit=limit
        )
    else:
        creator_id = creator if isinstance(creator, uuid.UUID) else None
        page = await service.list_public_videos(
            session, creator_id=creator_id, query=q, sort=sort, cursor=cursor, limit=limit
        )
    return _video_page(page, settings)


@videos_router.get("/{video_id}", response_model=VideoRead)
async def get_video(
    video_id: uuid.UUID, session: SessionDep, actor: OptionalActorDep, settings: SettingsDep
) -> VideoRead:
    """A video with its status, progress, renditions, price and counters."""
    view = await service.get_video(session, video_id, actor=actor)
    return VideoRead.from_model(
        view.video, api_prefix=settings.public_api_prefix, my_reaction=view.my_reaction
    )


@videos_router.patch("/{video_id}", response_model=VideoRead)
async def update_video(
    video_id: uuid.UUID, body: VideoUpdate, session: SessionDep, actor: ActorDep, settings: SettingsDep
) -> VideoRead:
    """Change title, description, tags, visibility or price (its creator or an admin)."""
    video = await service.update_video(session, video_id, actor=actor, changes=body.changes())
    return VideoRead.from_model(video, api_prefix=settings.public_api_prefix)


@videos_router.delete("/{video_id}", status_code=204)
async def delete_video(
    video_id: uuid.UUID, session: SessionDep, actor: ActorDep, storage: StorageDep
) -> Response:
    """Delete a video and its files (its creator or an admin)."""
    await service.delete_video(session, video_id, actor=actor, storage=storage)
    return Response(status_code=204)


@videos_router.get(
    "/{video_id}/thumbnail", response_model=None, responses={200: {"content": {"image/jpeg": {}}}}
)
async def get_thumbnail(
    video_id: uuid.UUID,
    session: SessionDep,
    actor: OptionalActorDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """The video's thumbnail JPEG (a redirect to a short-lived URL when storage is S3)."""
    key = await service.thumbnail_of(session, video_id, actor=actor)
    url = await storage.presign_get(key, settings.thumbnail_url_ttl_s, public=True)
    if url is not None:
        # Bytes never flow through Python on S3; the redirect itself may be cached only briefly.
        headers = {"Cache-Control": f"private, max-age={max(settings.thumbnail_url_ttl_s // 2, 1)}"}
        return RedirectResponse(url, status_code=307, headers=headers)
    if isinstance(storage, LocalStorage):
        path = storage.local_path(key)
        if not path.is_file():
            raise ThumbnailNotFound()
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
    if not await storage.exists(key):
        raise ThumbnailNotFound()
    return StreamingResponse(storage.stream(key), media_type="image/jpeg")


@search_router.get("/search", response_model=VideoPage, tags=["videos"])
async def search(
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[SearchQuery, Query(description='Words, "a phrase", or, -excluded')],
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> VideoPage:
    """Full-text search over public, ready videos, most relevant first (title > tags > description)."""
    page = await service.search_videos(session, query=q, cursor=cursor, limit=limit)
    return _video_page(page, settings)


# --- comments ----------------------------------------------------------------------------------


@videos_router.get("/{video_id}/comments", response_model=CommentPage)
async def list_comments(
    video_id: uuid.UUID,
    session: SessionDep,
    actor: OptionalActorDep,
    parent_id: Annotated[uuid.UUID | None, Query(description="List this comment's replies")] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> CommentPage:
    """Top-level comments, newest first, with reply counts; or one comment's replies, oldest first."""
    page = await service.list_comments(
        session, video_id, actor=actor, parent_id=parent_id, cursor=cursor, limit=limit
    )
    return _comment_page(page)


@videos_router.post("/{video_id}/comments", status_code=201, response_model=CommentRead)
async def create_comment(
    video_id: uuid.UUID, body: CommentCreate, session: SessionDep, actor: ActorDep
) -> CommentRead:
    """Comment on a video, or reply to a top-level comment with ``parent_id``."""
    comment = await service.create_comment(session, video_id, actor=actor, data=body)
    return CommentRead.from_model(comment)


@videos_router.patch("/{video_id}/comments/{comment_id}", response_model=CommentRead)
async def update_comment(
    video_id: uuid.UUID, comment_id: uuid.UUID, body: CommentUpdate, session: SessionDep, actor: ActorDep
) -> CommentRead:
    """Edit your own comment."""
    comment = await service.update_comment(session, video_id, comment_id, actor=actor, body=body.body)
    return CommentRead.from_model(comment)


@videos_router.delete("/{video_id}/comments/{comment_id}", status_code=204)
async def delete_comment(
    video_id: uuid.UUID, comment_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> Response:
    """Delete your own comment (and its replies); admins may delete any."""
    await service.delete_comment(session, video_id, comment_id, actor=actor)
    return Response(status_code=204)


# --- reactions ---------------------------------------------------------------------------------


@videos_router.put("/{video_id}/reaction", response_model=ReactionRead)
async def react_to_video(
    video_id: uuid.UUID, body: ReactionUpdate, session: SessionDep, actor: ActorDep
) -> ReactionRead:
    """Like or dislike a video (one reaction per user; a new kind replaces the old one)."""
    return _reaction(await service.react_to_video(session, video_id, actor=actor, kind=body.kind))


@videos_router.delete("/{video_id}/reaction", response_model=ReactionRead)
async def remove_video_reaction(video_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> ReactionRead:
    """Take back your like or dislike."""
    return _reaction(await service.remove_video_reaction(session, video_id, actor=actor))


@videos_router.put("/{video_id}/comments/{comment_id}/reaction", response_model=ReactionRead)
async def react_to_comment(
    video_id: uuid.UUID, comment_id: uuid.UUID, body: ReactionUpdate, session: SessionDep, actor: ActorDep
) -> ReactionRead:
    """Like or dislike a comment."""
    state = await service.react_to_comment(session, video_id, comment_id, actor=actor, kind=body.kind)
    return _reaction(state)


@videos_router.delete("/{video_id}/comments/{comment_id}/reaction", response_model=ReactionRead)
async def remove_comment_reaction(
    video_id: uuid.UUID, comment_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> ReactionRead:
    """Take back your reaction to a comment."""
    return _reaction(await service.remove_comment_reaction(session, video_id, comment_id, actor=actor))


# --- internal ----------------------------------------------------------------------------------


@internal_router.get("/{video_id}", response_model=VideoInternalRead)
async def internal_get_video(
    video_id: uuid.UUID, session: SessionDep, caller: CallingService
) -> VideoInternalRead:
    """A video as other services need it (owner, status, visibility, price, storage keys)."""
    return VideoInternalRead.from_model(await service.get_video_internal(session, video_id))


@internal_router.post("/{video_id}/progress", response_model=ProgressRead)
async def internal_progress(
    video_id: uuid.UUID, body: ProgressUpdate, session: SessionDep, caller: TranscoderDep
) -> ProgressRead:
    """The transcoder's progress (0..100) while the video is processing; it never moves backwards."""
    video = await service.record_progress(session, video_id, progress=body.progress)
    return ProgressRead(status=VideoStatus(video.status), progress=video.progress)


@internal_router.post("/{video_id}/transcode-result", response_model=VideoInternalRead)
async def internal_transcode_result(
    video_id: uuid.UUID, body: TranscodeResult, session: SessionDep, caller: TranscoderDep
) -> VideoInternalRead:
    """The transcoder's verdict: ready (with renditions) or failed (with a reason). Idempotent."""
    video = await service.record_transcode_result(session, video_id, result=body)
    return VideoInternalRead.from_model(video)


@internal_router.post("/{video_id}/views", response_model=VideoInternalRead)
async def internal_add_views(
    video_id: uuid.UUID, body: ViewsIncrement, session: SessionDep, caller: CallingService
) -> VideoInternalRead:
    """Count views (streaming/analytics); they order the most-viewed lists."""
    return VideoInternalRead.from_model(await service.add_views(session, video_id, count=body.count))


routers = [videos_router, search_router, internal_router]
