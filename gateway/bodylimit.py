"""Per-route-class request body limits: 413 before reading when Content-Length is too big, and
while streaming when a chunked body grows past the limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import send_problem
from gateway.routes import Match

# The rest of an oversized body is not wanted: the server closes the connection after the answer.
_CLOSE = {"Connection": "close"}


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit (the proxy aborts upstream)."""


def _too_large_detail(limit: int) -> str:
    return f"The request body is larger than this endpoint accepts ({limit} bytes)."


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: Match = scope["gateway.match"]
        limit = match.route_class.max_body_bytes
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked:
            if int(declared) > limit:
                await send_problem(
                    scope, receive, send, 413, "payload_too_large", _too_large_detail(limit), headers=_CLOSE
                )
                return
            # The server enforces Content-Length itself; nothing more to count.
            await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if response_started:
                raise
            await send_problem(
                scope, receive, send, 413, "payload_too_large", _too_large_detail(limit), headers=_CLOSE
            )
