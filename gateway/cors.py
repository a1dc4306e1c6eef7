"""CORS allow-list: preflights are answered here; credentials only for listed origins.

Starlette's CORSMiddleware does the work (it echoes an allowed origin, never ``*`` with
credentials); this subclass only turns its plain-text refusal into problem+json.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import problem
from gateway.metrics import count_rejection

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
    # tus 1.0 resumable uploads
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
)
EXPOSED_HEADERS = (
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
)


class AllowListCORSMiddleware(CORSMiddleware):
    def __init__(self, app: ASGIApp, *, origins: list[str], max_age_s: int = 600) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=True,
            expose_headers=EXPOSED_HEADERS,
            max_age=max_age_s,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Most requests (same-origin SPA, mobile apps, services) carry no Origin: skip the
        # header parsing the base class does for every request.
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        count_rejection("cors_rejected")
        detail = (
            response.body.decode("utf-8", "replace") if isinstance(response.body, bytes) else "Not allowed."
        )
        return problem(403, "cors_rejected", f"Cross-origin request refused: {detail}.")
