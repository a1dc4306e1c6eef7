"""Access and refresh tokens: rotation, reuse detection, logout, forged tokens, JWKS and key rotation."""

from __future__ import annotations

import asyncio
import time
import uuid
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from common.tokens import REVOKED_JTI_PREFIX
from services.auth.admin import rotate_keys
from services.auth.app import create_app
from services.auth.models import RefreshToken
from services.auth.tokens import hash_refresh_token
from tests.auth.conftest import auth_settings_for, client_for
from tests.auth.forge import BAD_TOKEN_NAMES, bad_tokens, parts
from tests.auth.helpers import Account, bearer, claims_of, signed_in


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def family_size(sessions: async_sessionmaker[AsyncSession], refresh_token: str) -> int:
    async with sessions() as session:
        family = (
            await session.execute(
                select(col(RefreshToken.family_id)).where(
                    col(RefreshToken.token_hash) == hash_refresh_token(refresh_token)
                )
            )
        ).scalar_one()
        count = await session.execute(
            select(func.count()).select_from(RefreshToken).where(col(RefreshToken.family_id) == family)
        )
        return int(count.scalar_one())


def verify_with_joserfc(token: str, jwks: dict[str, Any], *, issuer: str, audience: str) -> dict[str, Any]:
    """Verify with an independent JOSE implementation against the published key set."""
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])  # type: ignore[arg-type]
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(decoded.claims)
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["kid"]
    return dict(decoded.claims)


class TestAccessTokens:
    async def test_the_access_token_carries_the_agreed_claims_and_verifies_against_the_jwks(
        self, auth_client: httpx.AsyncClient, auth_app: FastAPI
    ):
        account = await signed_in(auth_client)
        jwks = (await auth_client.get("/.well-known/jwks.json")).json()
        settings = auth_app.state.settings
        claims = verify_with_joserfc(
            account.access_token, jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        assert claims["sub"] == account.user_id
        assert claims["role"] == "viewer"
        assert claims["name"] == "Test User"
        assert claims["typ"] == "access"
        assert claims["exp"] - claims["iat"] == 1800
        uuid.UUID(claims["jti"])
        assert parts(account.access_token)[0]["kid"] in {key["kid"] for key in jwks["keys"]}

    async def test_the_jwks_publishes_several_rsa_signing_keys(self, auth_client: httpx.AsyncClient):
        response = await auth_client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        keys = response.json()["keys"]
        assert len(keys) >= 2  # the current key and the next one, published before it signs
        assert len({key["kid"] for key in keys}) == len(keys)
        for key in keys:
            assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
            assert key["n"] and key["e"]
            assert "d" not in key and "p" not in key  # nothing private

    @pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
    async def test_a_bad_access_token_is_refused_with_401(
        self, name: str, auth_client: httpx.AsyncClient, auth_app: FastAPI
    ):
        account = await signed_in(auth_client)
        jwks = (await auth_client.get("/.well-known/jwks.json")).json()
        key = await auth_app.state.auth.keyring.signing_key()
        assert parts(account.access_token)[0]["kid"] == key.kid
        forged = bad_tokens(
            account.access_token, jwks=jwks, private_key=key.private_key, refresh_token=account.refresh_token
        )[name]
        response = await auth_client.get("/users/me", headers=bearer(forged))
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] in {"invalid_token", "token_expired"}
        assert response.headers["www-authenticate"].startswith("Bearer")
        # The genuine token still works, so the refusal was about the forgery.
        assert (await auth_client.get("/users/me", headers=account.headers)).status_code == 200


class TestRefreshRotation:
    async def test_a_refresh_token_buys_a_new_pair_once(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        first = await refresh(auth_client, account.refresh_token)
        assert first.status_code == 200, first.text
        pair = first.json()
        assert pair["refresh_token"] != account.refresh_token
        assert pair["access_token"] != account.access_token
        assert claims_of(pair["access_token"])["sub"] == account.user_id
        assert (await auth_client.get("/users/me", headers=bearer(pair["access_token"]))).status_code == 200
        second = await refresh(auth_client, pair["refresh_token"])
        assert second.status_code == 200

    async def test_the_browser_gets_the_refresh_token_as_a_strict_httponly_cookie(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        response = await auth_client.post(
            "/auth/login",
            json={"email": account.email, "password": account.password},
            headers={"X-Forwarded-For": "10.9.9.9"},
        )
        raw = response.headers["set-cookie"]
        cookie = SimpleCookie()
        cookie.load(raw)
        morsel = cookie["streamify_refresh"]
        assert morsel.value == response.json()["refresh_token"]
        assert morsel["httponly"] and morsel["secure"]
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/api/v1/auth"
        assert int(morsel["max-age"]) > 7 * 86400 - 10

    async def test_refresh_reads_the_cookie_when_the_body_has_no_token(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        response = await auth_client.post(
            "/auth/refresh", headers={"Cookie": f"streamify_refresh={account.refresh_token}"}
        )
        assert response.status_code == 200, response.text
        assert "streamify_refresh=" in response.headers["set-cookie"]
        assert claims_of(response.json()["access_token"])["sub"] == account.user_id

    async def test_refresh_without_any_token_is_401(self, auth_client: httpx.AsyncClient):
        response = await auth_client.post("/auth/refresh", json={})
        assert response.status_code == 401
        assert response.json()["code"] == "refresh_token_missing"

    async def test_an_unknown_refresh_token_is_401(self, auth_client: httpx.AsyncClient):
        response = await refresh(auth_client, "x" * 43)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"

    async def test_an_expired_refresh_token_is_401(
        self, auth_client: httpx.AsyncClient, auth_sessions: async_sessionmaker[AsyncSession]
    ):
        account = await signed_in(auth_client)
        async with auth_sessions() as session, session.begin():  # seven days pass
            await session.execute(
                update(RefreshToken)
                .where(col(RefreshToken.token_hash) == hash_refresh_token(account.refresh_token))
                .values(expires_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 1))
            )
        response = await refresh(auth_client, account.refresh_token)
        assert response.status_code == 401
        assert response.json()["code"] == "refresh_token_expired"

    async def test_after_becoming_a_creator_a_refresh_carries_the_new_role(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        created = await auth_client.post(
            "/users/me/channel",
            json={"channel_name": f"Birds {uuid.uuid4().hex[:8]}"},
            headers=account.headers,
        )
        assert created.json()["token_refresh_required"] is True
        pair = (await refresh(auth_client, account.refresh_token)).json()
        assert claims_of(pair["access_token"])["role"] == "creator"

    async def test_after_a_rename_a_refresh_carries_the_new_name(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client, display_name="Ada")
        renamed = await auth_client.patch(
            "/users/me", json={"display_name": "Ada Lovelace"}, headers=account.headers
        )
        assert renamed.status_code == 200, renamed.text
        pair = (await refresh(auth_client, account.refresh_token)).json()
        assert claims_of(pair["access_token"])["name"] == "Ada Lovelace"


class TestRefreshReuse:
    async def test_presenting_a_spent_refresh_token_revokes_the_whole_family(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        successor = (await refresh(auth_client, account.refresh_token)).json()

        reused = await refresh(auth_client, account.refresh_token)  # e.g. a thief's copy
        assert reused.status_code == 401
        assert reused.json()["code"] == "refresh_token_reused"
        assert reused.headers["content-type"] == "application/problem+json"
        assert (
            'streamify_refresh=""' in reused.headers["set-cookie"]
            or "Max-Age=0" in reused.headers["set-cookie"]
        )

        # The legitimate successor dies with the family, and so do the family's access tokens.
        after = await refresh(auth_client, successor["refresh_token"])
        assert after.status_code == 401
        assert after.json()["code"] == "refresh_token_revoked"
        for access in (successor["access_token"], account.access_token):
            me = await auth_client.get("/users/me", headers=bearer(access))
            assert me.status_code == 401
            assert me.json()["code"] == "token_revoked"

    async def test_other_sessions_of_the_same_user_survive(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        other = (
            await auth_client.post(
                "/auth/login",
                json={"email": account.email, "password": account.password},
                headers={"X-Forwarded-For": "10.8.8.8"},
            )
        ).json()
        await refresh(auth_client, account.refresh_token)
        await refresh(auth_client, account.refresh_token)  # reuse: revokes the first family only
        assert (await refresh(auth_client, other["refresh_token"])).status_code == 200

    async def test_two_parallel_refreshes_of_one_token_yield_at_most_one_successor(
        self, auth_client: httpx.AsyncClient, auth_sessions: async_sessionmaker[AsyncSession]
    ):
        for _ in range(3):
            account = await signed_in(auth_client)
            responses = await asyncio.gather(*(refresh(auth_client, account.refresh_token) for _ in range(2)))
            successes = [response for response in responses if response.status_code == 200]
            assert len(successes) <= 1
            assert all(r.status_code == 401 for r in responses if r.status_code != 200)
            # The family holds the original token and at most one successor.
            assert await family_size(auth_sessions, account.refresh_token) <= 2


class TestLogout:
    async def test_logout_revokes_the_access_token_and_the_refresh_family(
        self, auth_client: httpx.AsyncClient, redis: Redis
    ):
        account = await signed_in(auth_client)
        rotated = (await refresh(auth_client, account.refresh_token)).json()
        response = await auth_client.post(
            "/auth/logout",
            json={"refresh_token": rotated["refresh_token"]},
            headers=bearer(rotated["access_token"]),
        )
        assert response.status_code == 204
        cookie = response.headers["set-cookie"]
        assert "streamify_refresh=" in cookie and "Max-Age=0" in cookie and "Path=/api/v1/auth" in cookie

        for access in (rotated["access_token"], account.access_token):
            me = await auth_client.get("/users/me", headers=bearer(access))
            assert me.status_code == 401
            assert me.json()["code"] == "token_revoked"
        refused = await refresh(auth_client, rotated["refresh_token"])
        assert refused.status_code == 401
        assert refused.json()["code"] == "refresh_token_revoked"

        jti = claims_of(rotated["access_token"])["jti"]
        ttl = await redis.ttl(REVOKED_JTI_PREFIX + jti)
        assert 1700 < ttl <= 1805  # kept until the token would have expired anyway

    async def test_logout_takes_the_refresh_token_from_the_cookie(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        response = await auth_client.post(
            "/auth/logout",
            headers={**account.headers, "Cookie": f"streamify_refresh={account.refresh_token}"},
        )
        assert response.status_code == 204
        assert (await refresh(auth_client, account.refresh_token)).json()["code"] == "refresh_token_revoked"

    async def test_logout_without_a_refresh_token_still_revokes_the_access_token(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        assert (await auth_client.post("/auth/logout", headers=account.headers)).status_code == 204
        assert (await auth_client.get("/users/me", headers=account.headers)).status_code == 401
        # Without the refresh token the session itself lives on (the client may sign out of it later).
        assert (await refresh(auth_client, account.refresh_token)).status_code == 200

    async def test_logout_needs_an_access_token(self, auth_client: httpx.AsyncClient):
        assert (await auth_client.post("/auth/logout")).status_code == 401

    async def test_someone_elses_refresh_token_is_not_revoked(self, auth_client: httpx.AsyncClient):
        mine, theirs = await signed_in(auth_client), await signed_in(auth_client)
        await auth_client.post(
            "/auth/logout", json={"refresh_token": theirs.refresh_token}, headers=mine.headers
        )
        assert (await refresh(auth_client, theirs.refresh_token)).status_code == 200


class TestKeyRotation:
    async def test_tokens_signed_before_a_rotation_stay_valid_and_new_ones_use_the_new_key(
        self, asgi_client: Any, isolated_auth_database: str, redis_url: str
    ):
        settings = auth_settings_for(isolated_auth_database, redis_url)
        app = create_app(settings)
        async with asgi_client(app), client_for(app) as client:
            before: Account = await signed_in(client)
            old_kid = parts(before.access_token)[0]["kid"]
            jwks_before = (await client.get("/.well-known/jwks.json")).json()
            waiting = [key["kid"] for key in jwks_before["keys"] if key["kid"] != old_kid]

            new_kid = await rotate_keys(isolated_auth_database, redis_url=redis_url, settings=settings)
            assert new_kid != old_kid
            assert new_kid in waiting  # it was published before it started signing

            # No 401 spike: the old token still works, on this service and against the new JWKS.
            assert (await client.get("/users/me", headers=before.headers)).status_code == 200
            jwks_after = (await client.get("/.well-known/jwks.json")).json()
            published = [key["kid"] for key in jwks_after["keys"]]
            assert old_kid in published and new_kid in published and len(published) == 3
            verify_with_joserfc(
                before.access_token, jwks_after, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )

            after = await signed_in(client)
            assert parts(after.access_token)[0]["kid"] == new_kid
            assert (await client.get("/users/me", headers=after.headers)).status_code == 200
            # A refresh after the rotation also signs with the new key.
            pair = (await refresh(client, before.refresh_token)).json()
            assert parts(pair["access_token"])[0]["kid"] == new_kid
            verify_with_joserfc(
                pair["access_token"], jwks_after, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )


class TestExpiry:
    async def test_an_access_token_past_its_expiry_is_refused(
        self, auth_client: httpx.AsyncClient, auth_app: FastAPI
    ):
        account = await signed_in(auth_client)
        key = await auth_app.state.auth.keyring.signing_key()
        claims = claims_of(account.access_token)
        from tests.auth.forge import resign

        just_expired = resign(
            account.access_token, key.private_key, iat=int(time.time()) - 1800, exp=int(time.time()) - 30
        )
        response = await auth_client.get("/users/me", headers=bearer(just_expired))
        assert response.status_code == 401
        assert response.json()["code"] == "token_expired"
        assert claims["exp"] > time.time()
