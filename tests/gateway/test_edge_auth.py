"""Edge authentication: bad tokens are refused with 401 before any upstream sees the request."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from common.tokens import REVOKED_JTI_PREFIX
from gateway.settings import GatewaySettings
from tests.auth.forge import BAD_TOKEN_NAMES, bad_tokens, parts
from tests.gateway.conftest import ServerProcess, Signer, echo_count, open_gateway


def upstream_hits(echoes: dict[str, ServerProcess]) -> int:
    return sum(echo_count(process) for process in echoes.values())


class TestBadTokensNeverReachAnUpstream:
    @pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
    async def test_each_forged_token_gets_401_at_the_edge(
        self, gateway: httpx.AsyncClient, signer: Signer, echoes: dict[str, ServerProcess], name: str
    ) -> None:
        forged = bad_tokens(
            signer.token(), jwks=signer.jwks, private_key=signer.key, refresh_token=secrets.token_urlsafe(48)
        )[name]
        before = upstream_hits(echoes)
        response = await gateway.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {"invalid_token", "token_expired"}
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert upstream_hits(echoes) == before

    @pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"])
    async def test_a_malformed_authorization_header_is_refused(
        self, gateway: httpx.AsyncClient, echoes: dict[str, ServerProcess], header: str
    ) -> None:
        before = upstream_hits(echoes)
        response = await gateway.get("/api/v1/videos", headers={"Authorization": header})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"
        assert upstream_hits(echoes) == before

    async def test_a_revoked_token_is_refused(
        self, gateway: httpx.AsyncClient, signer: Signer, redis: Redis, echoes: dict[str, ServerProcess]
    ) -> None:
        # Revoked before the gateway has seen it: nothing remembered, so the request waits for
        # the deny-list (a token revoked after use: tests/gateway/test_edge_memory.py).
        token = signer.token()
        await redis.set(REVOKED_JTI_PREFIX + parts(token)[1]["jti"], "1", ex=600)
        before = upstream_hits(echoes)
        response = await gateway.get("/api/v1/videos", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["code"] == "token_revoked"
        assert upstream_hits(echoes) == before


class TestGoodTokens:
    async def test_a_valid_token_passes_and_the_verified_identity_is_forwarded(
        self, gateway: httpx.AsyncClient, signer: Signer
    ) -> None:
        token = signer.token(sub="user-123", role="creator")
        response = await gateway.get("/api/v1/videos", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        headers = dict(response.json()["headers"])
        assert headers["x-streamify-user-id"] == "user-123"
        assert headers["x-streamify-user-role"] == "creator"
        # Services verify the token again (defence in depth), so it is passed on.
        assert headers["authorization"] == f"Bearer {token}"

    async def test_anonymous_requests_pass_without_identity(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/videos")
        assert response.status_code == 200
        names = {name for name, _ in response.json()["headers"]}
        assert "x-streamify-user-id" not in names
        assert "authorization" not in names


class TestSigningKeysUnavailable:
    async def test_an_unreachable_jwks_is_a_503_not_a_sign_out(
        self, settings_for: Callable[..., GatewaySettings], signer: Signer
    ) -> None:
        settings = settings_for(jwks_url="http://127.0.0.1:9/.well-known/jwks.json")
        async with open_gateway(settings) as client:
            response = await client.get(
                "/api/v1/videos", headers={"Authorization": f"Bearer {signer.token()}"}
            )
        assert response.status_code == 503
        assert response.json()["code"] == "auth_unavailable"
