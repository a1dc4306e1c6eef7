"""Issuing tokens: RS256 access JWTs and opaque refresh tokens (stored only as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import jwt

from common.tokens import ACCESS_TOKEN_TYPE
from services.auth.keys import ALGORITHM, LoadedKey

REFRESH_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    jti: str
    issued_at: int
    expires_at: int


def mint_access_token(
    key: LoadedKey,
    *,
    user_id: uuid.UUID,
    role: str,
    name: str,
    issuer: str,
    audience: str,
    ttl_s: int,
    now: int,
) -> AccessToken:
    jti = str(uuid.uuid4())
    expires_at = now + ttl_s
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "role": role,
        "name": name,
        "typ": ACCESS_TOKEN_TYPE,
        "jti": jti,
        "iat": now,
        "exp": expires_at,
    }
    token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
    return AccessToken(token=token, jti=jti, issued_at=now, expires_at=expires_at)


def new_refresh_token() -> str:
    """256 random bits, URL-safe; the client's copy is the only one in existence."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def hash_refresh_token(token: str) -> bytes:
    # A plain hash suffices: the token has 256 bits of entropy, nothing to brute-force.
    return hashlib.sha256(token.encode()).digest()
