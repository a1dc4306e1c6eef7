"""Streaming routes (served without the /api/v1 prefix, which the gateway strips): thin, they parse,
call the service and shape the response. HLS delivery lives in ``delivery.py``."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from common.commit_hooks import HookedSessionDep
from common.errors import AppError, Unauthorized
from common.identity import CurrentIdentity, bearer_token
from common.tokens import Identity, TokenVerifier
from services.streaming import metrics
from services.streaming.errors import InvalidIdentity
from services.streaming.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from services.streaming.schemas import (
    HeartbeatCreate,
    HeartbeatRead,
    HistoryItem,
    HistoryPage,
    PlayerState,
    SessionCreate,
    SessionRead,
)
from services.streaming.service import Playback, SessionView, Viewer

SessionDep = HookedSessionDep


# Dependencies are coroutines: FastAPI runs plain functions in a worker thread, a hop that would
# cost more than the heartbeat itself.


def _viewer(identity: Identity) -> Viewer:
    try:
        return Viewer(user_id=uuid.UUID(identity.user_id), role=identity.role)
    except ValueError as exc:
        raise InvalidIdentity() from exc


async def current_viewer(identity: CurrentIdentity) -> Viewer:
    return _viewer(identity)


async def heartbeat_identity(request: Request) -> Identity:
    """The caller, verified without the revoked-token lookup: the heartbeat script does that one in
    the same Redis round trip as the accounting (the hot path stays at one round trip)."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Sign in to do this.", code="not_authenticated")
    verifier: TokenVerifier = request.app.state.heartbeat_verifier
    return await verifier.verify(token)


async def get_playback(request: Request) -> Playback:
    playback: Playback = request.app.state.playback
    return playback


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
PlaybackDep = Annotated[Playback, Depends(get_playback)]

router = APIRouter(prefix="/playback/sessions", tags=["playback"])
history_router = APIRouter(tags=["playback"])


def _session_read(playback: Playback, view: SessionView) -> SessionRead:
    return SessionRead(
        session_id=view.session_id,
        video_id=view.video_id,
        status=view.status,
        master_url=playback.master_url(view),
        heartbeat_interval_s=playback.settings.heartbeat_interval_seconds,
        billing_unit_s=view.unit_ms / 1000,
        price_per_minute=view.price_per_minute,
        currency=view.currency,
        billed_minutes=view.billed_units,
        charged_total=view.charged_total,
        balance=view.balance,
        watched_s=view.watched_ms / 1000,
        position_s=view.position_ms / 1000,
        started_at=view.started_at,
        ended_at=view.ended_at,
        end_reason=view.end_reason,
    )


@router.post("", status_code=201, response_model=SessionRead)
async def start_session(
    body: SessionCreate, session: SessionDep, viewer: ViewerDep, playback: PlaybackDep, response: Response
) -> SessionRead:
    """Start watching a video: a paid one charges its first unit now (402 when the wallet cannot)."""
    view = await playback.start_session(session, viewer=viewer, video_id=body.video_id)
    response.headers["Location"] = (
        f"{playback.settings.public_api_prefix}/playback/sessions/{view.session_id}"
    )
    return _session_read(playback, view)


@router.get("/{session_id}", response_model=SessionRead)
async def get_session(session_id: uuid.UUID, viewer: ViewerDep, playback: PlaybackDep) -> SessionRead:
    """One of your sessions: status, units billed, watch time (a fresh master URL while it lives)."""
    return _session_read(playback, await playback.get_session(session_id, viewer=viewer))


async def heartbeat_reply(
    playback: Playback, identity: Identity, session_id: uuid.UUID, body: HeartbeatCreate
) -> bytes:
    """The heartbeat, answered as JSON bytes (shared by the route and ``fastpath.py``)."""
    try:
        view = await playback.heartbeat(
            session_id,
            viewer=_viewer(identity),
            token_id=identity.jti,
            position_s=body.position_s,
            playing=body.state is PlayerState.playing,
        )
    except AppError as exc:
        metrics.count_heartbeat(exc.code)
        raise
    metrics.count_heartbeat(view.status.value)
    return orjson.dumps(
        {
            "status": view.status.value,
            "billed_minutes": view.billed_units,
            "charged_total": view.charged_total,
            "balance": view.balance,
            "currency": view.currency,
            "watched_s": view.watched_ms / 1000,
            "next_heartbeat_s": playback.settings.heartbeat_interval_seconds,
        }
    )


@router.post("/{session_id}/heartbeat", response_model=HeartbeatRead)
async def heartbeat(session_id: uuid.UUID, body: HeartbeatCreate, request: Request) -> Response:
    """Report the player's position and state; watch time accrues and due units are charged."""
    # Well-formed requests are answered by ``fastpath.HeartbeatFastPath`` before they get here;
    # this route documents the API and answers the rest (validation errors, missing tokens).
    identity = await heartbeat_identity(request)
    playback: Playback = request.app.state.playback
    reply = await heartbeat_reply(playback, identity, session_id, body)
    return Response(reply, media_type="application/json")


@router.post("/{session_id}/end", response_model=SessionRead)
async def end_session(session_id: uuid.UUID, viewer: ViewerDep, playback: PlaybackDep) -> SessionRead:
    """Stop watching: the session ends, its segments answer 410, the history keeps the position."""
    return _session_read(playback, await playback.end_session(session_id, viewer=viewer))


@history_router.get("/users/me/history", response_model=HistoryPage)
async def watch_history(
    session: SessionDep,
    viewer: ViewerDep,
    playback: PlaybackDep,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> HistoryPage:
    """Videos you watched, most recent first, with where to resume and whether you finished them."""
    page = await playback.history(session, viewer=viewer, cursor=cursor, limit=limit)
    return HistoryPage(
        items=[
            HistoryItem(
                video_id=row.video_id,
                position_s=row.position_ms / 1000,
                completed=row.completed,
                watched_s=row.watched_ms / 1000,
                last_watched_at=row.last_watched_at,
            )
            for row in page.items
        ],
        next_cursor=page.next_cursor,
    )


routers = [router, history_router]
