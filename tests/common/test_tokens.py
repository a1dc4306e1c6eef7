"""The verifier every service and the gateway share: keys by kid, rotation, revocation, outages."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from common.errors import Unauthorized
from common.tokens import REVOKED_JTI_PREFIX, JWKSCache, TokenVerifier, redis_revocation_check

ISSUER, AUDIENCE = "streamify-auth", "streamify"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


def access_token(key: rsa.RSAPrivateKey, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "role": "viewer",
        "typ": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 1800,
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class Loader:
    def __init__(self, *keys: tuple[rsa.RSAPrivateKey, str]) -> None:
        self.keys = list(keys)
        self.calls = 0
        self.down = False

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ConnectionError("auth is down")
        return {"keys": [jwk(key, kid) for key, kid in self.keys]}


class TestKeyRotation:
    async def test_tokens_from_every_published_key_verify(self):
        old, new = new_key(), new_key()
        verifier = TokenVerifier(
            JWKSCache(Loader((old, "k1"), (new, "k2"))), issuer=ISSUER, audience=AUDIENCE
        )
        assert (await verifier.verify(access_token(old, "k1"))).role == "viewer"
        assert (await verifier.verify(access_token(new, "k2", role="admin"))).is_admin

    async def test_a_key_published_after_caching_is_picked_up_on_first_sight(self):
        first, second = new_key(), new_key()
        loader = Loader((first, "k1"))
        verifier = TokenVerifier(JWKSCache(loader), issuer=ISSUER, audience=AUDIENCE)
        await verifier.verify(access_token(first, "k1"))
        loader.keys.append((second, "k2"))
        # The unknown-kid refetch is rate-limited; let the window pass as real time would.
        verifier._jwks._fetched_at -= 10
        assert await verifier.verify(access_token(second, "k2"))

    async def test_a_flood_of_unknown_kids_costs_one_refetch(self):
        key = new_key()
        loader = Loader((key, "k1"))
        verifier = TokenVerifier(JWKSCache(loader), issuer=ISSUER, audience=AUDIENCE)
        await verifier.verify(access_token(key, "k1"))
        for i in range(50):
            with pytest.raises(Unauthorized):
                await verifier.verify(access_token(key, f"forged-{i}"))
        assert loader.calls == 1

    async def test_an_auth_outage_keeps_the_cached_keys_working(self):
        key = new_key()
        loader = Loader((key, "k1"))
        jwks = JWKSCache(loader, ttl_s=0.01)
        verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
        await verifier.verify(access_token(key, "k1"))
        loader.down = True
        await asyncio.sleep(0.02)
        assert await verifier.verify(access_token(key, "k1"))


class TestRefusals:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"aud": "someone-else"},
            {"iss": "evil"},
            {"typ": "refresh"},
            {"exp": int(time.time()) - 60},
        ],
        ids=["wrong-aud", "wrong-iss", "wrong-typ", "expired"],
    )
    async def test_claims_that_do_not_fit_are_refused(self, overrides):
        key = new_key()
        verifier = TokenVerifier(JWKSCache(Loader((key, "k1"))), issuer=ISSUER, audience=AUDIENCE)
        with pytest.raises(Unauthorized):
            await verifier.verify(access_token(key, "k1", **overrides))

    async def test_a_revoked_token_is_refused_even_after_it_was_cached(self, redis):
        key = new_key()
        verifier = TokenVerifier(
            JWKSCache(Loader((key, "k1"))),
            issuer=ISSUER,
            audience=AUDIENCE,
            is_revoked=redis_revocation_check(redis),
        )
        jti = uuid.uuid4().hex
        token = access_token(key, "k1", jti=jti)
        assert await verifier.verify(token)
        await redis.set(REVOKED_JTI_PREFIX + jti, b"1", ex=60)
        with pytest.raises(Unauthorized) as refused:
            await verifier.verify(token)
        assert refused.value.code == "token_revoked"
