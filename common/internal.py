"""Service-to-service credentials and the HTTP client services use to call each other.

A caller mints a short-lived HS256 token (issuer = calling service, audience = the mesh) with
the shared INTERNAL_SECRET and sends it as ``X-Service-Token``. The gateway strips that header
from client requests and never routes ``/internal/*``, so clients can neither present nor obtain one.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import jwt
import stamina
from fastapi import Depends, Request

from common import tracing
from common.errors import Forbidden, Unauthorized

SERVICE_TOKEN_HEADER = "x-service-token"  # noqa: S105 - a header name
SERVICE_AUDIENCE = "streamify-internal"
SERVICE_TOKEN_TTL_S = 120
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


def mint_service_token(secret: str, service: str, *, ttl_s: int = SERVICE_TOKEN_TTL_S) -> str:
    now = int(time.time())
    claims = {"iss": service, "sub": service, "aud": SERVICE_AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode({**claims, "typ": "service"}, secret, algorithm="HS256")


# Tokens already verified, until they expire: a caller reuses its token for about a minute and a
# half (ServiceClient), so at thousands of internal calls per second the signature check runs once
# per token rather than once per call. Keyed by (secret, token): a token counts only under the
# secret that verified it.
_verified: dict[tuple[str, str], tuple[str, float]] = {}
_VERIFIED_MAX = 1024


def verify_service_token(secret: str, token: str) -> str:
    """The calling service's name, or Unauthorized."""
    hit = _verified.get((secret, token))
    if hit is not None and hit[1] > time.time():
        return hit[0]
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=SERVICE_AUDIENCE,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized("A valid service credential is required.", code="invalid_service_token") from exc
    if claims.get("typ") != "service":
        raise Unauthorized("A valid service credential is required.", code="invalid_service_token")
    caller = str(claims["iss"])
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[(secret, token)] = (caller, float(claims["exp"]))
    return caller


def require_service(*allowed: str):
    """Dependency for ``/internal/*`` routes: a valid service token, optionally from named callers."""

    async def check(request: Request) -> str:
        token = request.headers.get(SERVICE_TOKEN_HEADER)
        if not token:
            raise Unauthorized("A service credential is required.", code="service_token_required")
        caller = verify_service_token(request.app.state.settings.internal_secret, token)
        if allowed and caller not in allowed:
            raise Forbidden(f"Service '{caller}' may not call this.", code="service_not_allowed")
        return caller

    return check


CallingService = Annotated[str, Depends(require_service())]


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response


class ServiceClient:
    """An httpx client to one peer service: service credential, timeouts, retries when safe.

    Retries happen only for idempotent methods (or a POST that carries an Idempotency-Key), on
    connection errors, timeouts and 502/503/504, with stamina's jittered exponential back-off.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        secret: str,
        timeout_s: float = 5.0,
        attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=2.0), transport=transport
        )
        self._service = service
        self._secret = secret
        self._attempts = attempts
        self._token = ""
        self._token_expires = 0.0

    def _credential(self) -> str:
        if time.time() > self._token_expires - 30:
            self._token = mint_service_token(self._secret, self._service)
            self._token_expires = time.time() + SERVICE_TOKEN_TTL_S
        return self._token

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        method = method.upper()
        headers = {
            **tracing.outgoing_headers(),
            **kwargs.pop("headers", {}),
            SERVICE_TOKEN_HEADER: self._credential(),
        }
        retry_safe = method in IDEMPOTENT_METHODS or "idempotency-key" in {h.lower() for h in headers}
        if not retry_safe:
            return await self._client.request(method, url, headers=headers, **kwargs)

        async def attempt() -> httpx.Response:
            response = await self._client.request(method, url, headers=headers, **kwargs)
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatus(response)
            return response

        try:
            async for retry in stamina.retry_context(
                on=(httpx.TransportError, _RetryableStatus), attempts=self._attempts, wait_initial=0.05
            ):
                with retry:
                    return await attempt()
        except _RetryableStatus as exc:
            return exc.response
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await self._client.aclose()
