"""Edge authentication: a present bearer token must verify before any upstream sees the request.

Anonymous requests pass (each service decides what needs a user); a present but invalid token
(malformed, expired, tampered, wrong key/alg/audience/type) is refused here with 401. The
signature check uses the shared TokenVerifier with the JWKS cached from the auth service; its
verified-token cache makes repeated tokens cost a dictionary lookup. Revocation is checked in the
same Redis call as the rate limits (see gateway.ratelimit).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import Unauthorized
from common.tokens import Identity, TokenVerifier
from gateway.problems import send_problem

log = structlog.get_logger("gateway.auth")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="streamify", error="invalid_token"'}


# Tokens seen in the last few seconds skip even the verifier's cache (whose TTL bookkeeping
# costs more than the rest of the edge check); expiry is still checked on every request.
_RECENT_S = 10.0
_RECENT_MAX = 8192


class EdgeAuthMiddleware:
    def __init__(self, app: ASGIApp, *, verifier: Callable[[], TokenVerifier]) -> None:
        self.app = app
        self._verifier = verifier
        self._recent: dict[bytes, tuple[Identity, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if header is None:
            scope["gateway.identity"] = None
            await self.app(scope, receive, send)
            return
        recent = self._recent.get(header)
        if recent is not None:
            identity, seen_at = recent
            now = time.time()
            if identity.expires_at > now and now - seen_at < _RECENT_S:
                scope["gateway.identity"] = identity
                await self.app(scope, receive, send)
                return
            del self._recent[header]
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            await send_problem(
                scope,
                receive,
                send,
                401,
                "invalid_token",
                "Use 'Authorization: Bearer <access token>'.",
                headers=_CHALLENGE,
            )
            return
        try:
            identity = await self._verifier().verify(token.decode("latin-1"))
        except Unauthorized as exc:
            if exc.code == "jwks_unavailable":
                # Not the caller's fault: the keys cannot be fetched. A 401 would sign users out.
                log.warning("edge_jwks_unavailable")
                await send_problem(
                    scope,
                    receive,
                    send,
                    503,
                    "auth_unavailable",
                    "Sign-in cannot be checked right now; try again shortly.",
                    headers={"Retry-After": "5"},
                )
                return
            log.info("edge_token_refused", code=exc.code)
            await send_problem(scope, receive, send, 401, exc.code, exc.detail, headers=_CHALLENGE)
            return
        if len(self._recent) >= _RECENT_MAX:
            self._recent.clear()
        self._recent[header] = (identity, time.time())
        scope["gateway.identity"] = identity
        await self.app(scope, receive, send)
