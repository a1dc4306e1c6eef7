"""Test identities: RS256 access tokens signed the way the auth service signs them, with a key a
service app trusts through ``create_app(jwks_loader=minter.loader)`` (no auth server needed)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from common.tokens import JWKSLoader


class TokenMinter:
    """Signs access tokens the way the auth service does (RS256, kid, iss/aud/typ/jti/exp)."""

    def __init__(self, *, issuer: str = "streamify-auth", audience: str = "streamify") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.issuer = issuer
        self.audience = audience

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def loader(self, app: FastAPI) -> JWKSLoader:
        async def load() -> dict[str, Any]:
            return self.jwks()

        return load

    def token(self, user_id: uuid.UUID, role: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "role": role,
            "name": f"User {str(user_id)[:8]}",
            "typ": "access",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 1800,
            **overrides,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
