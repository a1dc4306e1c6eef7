"""The heartbeat's fast path: ``POST /playback/sessions/{id}/heartbeat`` answered in a pure-ASGI
middleware, without FastAPI's per-request machinery (routing through every route, dependency
resolution, body parsing into a dict and validating it again, response validation).

Heartbeats are most of the service's traffic (every player, every few seconds), and that machinery
cost about as much CPU as the heartbeat's own work (its Redis round trip included). This sits
inside the shared middlewares (request id, metrics: those still see every heartbeat) and handles
only well-formed requests, with the same code as the route (``api.heartbeat_reply``) and the same
problem+json for the service's errors; anything else — invalid JSON or fields, no bearer token,
a large body — goes on to the FastAPI route unchanged, which answers it the usual way.
"""

from __future__ import annotations

import re
import uuid

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import AppError, problem
from common.tokens import TokenVerifier
from services.streaming.api import heartbeat_reply, router
from services.streaming.schemas import HeartbeatCreate
from services.streaming.service import Playback

_PATH = re.compile(r"/playback/sessions/([0-9a-fA-F-]{32,36})/heartbeat")
ROUTE_PATH = "/playback/sessions/{session_id}/heartbeat"
MAX_BODY = 4096
_JSON_HEADERS = [(b"content-type", b"application/json")]


class HeartbeatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The route the metrics middleware labels heartbeats with. Left unset, it would match the
        # path against every route of the app on every heartbeat (FastAPI routes it, not us).
        self._route = next(
            r
            for r in router.routes
            if isinstance(r, APIRoute) and r.path == ROUTE_PATH and "POST" in (r.methods or ())
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, complete = b"", False
        while not complete:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            complete = not message.get("more_body", False)
            if len(body) > MAX_BODY:
                break
        token = _bearer(scope)
        try:
            if not complete or token is None:
                raise ValueError("not for the fast path")
            session_id = uuid.UUID(match[1])
            data = HeartbeatCreate.model_validate_json(body)
        except (ValueError, ValidationError):
            await self.app(scope, _replay(body, complete, receive), send)
            return
        scope["route"] = self._route
        state = scope["app"].state
        playback: Playback = state.playback
        verifier: TokenVerifier = state.heartbeat_verifier
        try:
            identity = await verifier.verify(token)
            reply = await heartbeat_reply(playback, identity, session_id, data)
        except AppError as exc:
            response = problem(
                exc.status, exc.code, exc.detail, instance=scope["path"], headers=exc.headers, **exc.extra
            )
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": reply})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` for the next app: what was read already, then the rest of the stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
