"""Access-token verification against the published JWKS, with a key cache and a verified-token cache.

Used by the gateway at the edge and by every service again (defence in depth). Only RS256 is
accepted, the key is chosen by ``kid`` from the cached JWKS, and ``iss``/``aud``/``typ``/``exp``
are all required. Revoked token ids are looked up through an injected callable so the same
verifier works with Redis in services and in the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cachetools import TTLCache
from jwt.algorithms import RSAAlgorithm

from common.errors import Unauthorized

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value
ALGORITHM = "RS256"
REVOKED_JTI_PREFIX = "auth:revoked-jti:"
# Each revoked jti is also published here, so a gateway that remembers a token as good forgets
# it at once (gateway.memory) instead of on its next look at the deny-list.
REVOKED_JTI_CHANNEL = "auth:revoked-jti"
# An unknown kid triggers at most one JWKS refetch per this many seconds (a flood of forged
# kids must not turn into a flood of requests to the auth service).
UNKNOWN_KID_REFETCH_S = 5.0

JWKSLoader = Callable[[], Awaitable[dict[str, Any]]]
RevocationCheck = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as proven by a verified access token."""

    user_id: str
    role: str
    jti: str
    expires_at: int
    # The display name when the token was issued (the standard ``name`` claim; None in tokens
    # issued before it was added). Shown next to what the user writes, e.g. comments.
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def http_jwks_loader(url: str, *, timeout: float = 5.0) -> JWKSLoader:
    async def load() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    return load


class JWKSCache:
    """Public keys by kid; refreshed after ``ttl_s`` and (rate-limited) when an unknown kid shows up."""

    def __init__(self, loader: JWKSLoader, *, ttl_s: float = 300.0) -> None:
        self._loader = loader
        self._ttl_s = ttl_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl_s
        if kid in self._keys and not stale:
            return self._keys[kid]
        if stale or now - self._fetched_at > UNKNOWN_KID_REFETCH_S:
            await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        waited_since = time.monotonic()
        async with self._lock:
            # Many first requests arrive together: whoever waited while another refreshed uses its keys.
            if self._fetched_at >= waited_since or time.monotonic() - self._fetched_at < 0.05:
                return
            try:
                document = await self._loader()
            except Exception:
                # Keep serving the keys we have; a brief auth outage must not log everyone out.
                self._fetched_at = time.monotonic() - self._ttl_s + UNKNOWN_KID_REFETCH_S
                if not self._keys:
                    raise
                return
            keys: dict[str, Any] = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("kid") and jwk.get("use", "sig") == "sig":
                    keys[jwk["kid"]] = RSAAlgorithm.from_jwk(jwk)
            self._keys = keys
            self._fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(
        self,
        jwks: JWKSCache,
        *,
        issuer: str,
        audience: str,
        is_revoked: RevocationCheck | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._is_revoked = is_revoked
        # Signature checks are the expensive part; a token that verified once stays valid until
        # it expires, so only the (cheap) revocation check is repeated on a cache hit.
        self._verified: TTLCache[str, Identity] = TTLCache(maxsize=cache_size, ttl=60)

    async def verify(self, token: str) -> Identity:
        identity = self._verified.get(token)
        if identity is None:
            identity = await self._verify_signature(token)
            self._verified[token] = identity
        if identity.expires_at <= time.time():
            self._verified.pop(token, None)
            raise Unauthorized("The access token has expired.", code="token_expired")
        if self._is_revoked is not None and await self._is_revoked(identity.jti):
            raise Unauthorized("The access token has been revoked.", code="token_revoked")
        return identity

    async def _verify_signature(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed.", code="invalid_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("The access token is not RS256-signed.", code="invalid_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The access token names no key.", code="invalid_token")
        try:
            key = await self._jwks.key_for(kid)
        except Exception as exc:
            raise Unauthorized("The signing keys are unavailable.", code="jwks_unavailable") from exc
        if key is None:
            raise Unauthorized("The access token was signed by an unknown key.", code="invalid_token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid.", code="invalid_token") from exc
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise Unauthorized("This is not an access token.", code="invalid_token")
        return Identity(
            user_id=str(claims["sub"]),
            role=str(claims.get("role", "viewer")),
            jti=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            name=name if isinstance(name := claims.get("name"), str) and name else None,
        )


async def revoke_access_tokens(redis: Any, tokens: list[tuple[str, int]]) -> None:
    """Deny-list each ``(jti, expires_at)`` until its token expires, and announce it."""
    now = int(time.time())
    pipe = redis.pipeline(transaction=False)
    queued = False
    for jti, expires_at in tokens:
        if expires_at > now:
            # +5 s: verifiers accept tokens up to 5 s past exp (clock leeway).
            pipe.set(REVOKED_JTI_PREFIX + jti, b"1", ex=expires_at - now + 5)
            pipe.publish(REVOKED_JTI_CHANNEL, jti)
            queued = True
    if queued:
        await pipe.execute()


def redis_revocation_check(redis: Any) -> RevocationCheck:
    async def is_revoked(jti: str) -> bool:
        return bool(await redis.exists(REVOKED_JTI_PREFIX + jti))

    return is_revoked
