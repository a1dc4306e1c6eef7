"""Sign-up, sign-in, profile: what a user of the API sees."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.auth.models import User
from tests.auth.helpers import (
    STRONG_PASSWORD,
    bearer,
    claims_of,
    login,
    random_ip,
    register,
    signed_in,
    unique_email,
)


class TestRegisterLoginMe:
    async def test_a_new_user_registers_signs_in_and_reads_their_account(
        self, auth_client: httpx.AsyncClient
    ):
        email = unique_email()
        registered = await register(auth_client, email=email, display_name="Ada")
        assert registered.status_code == 201, registered.text
        user = registered.json()
        assert user["email"] == email
        assert user["display_name"] == "Ada"
        assert user["role"] == "viewer"
        assert user["email_verified"] is False
        assert "password" not in registered.text and "argon2" not in registered.text

        signed = await login(auth_client, email)
        assert signed.status_code == 200, signed.text
        tokens = signed.json()
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == 1800
        assert tokens["refresh_expires_in"] == 7 * 86400
        assert signed.headers["cache-control"] == "no-store"

        me = await auth_client.get("/users/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user["id"]
        assert me.json()["channel_id"] is None
        assert claims_of(tokens["access_token"])["sub"] == user["id"]

    async def test_the_email_is_stored_normalised_and_sign_in_ignores_case_and_spaces(
        self, auth_client: httpx.AsyncClient
    ):
        local = f"Mixed.Case.{uuid.uuid4().hex[:8]}"
        registered = await register(auth_client, email=f"  {local}@Example.COM ")
        assert registered.status_code == 201, registered.text
        assert registered.json()["email"] == f"{local.lower()}@example.com"
        assert (await login(auth_client, f"{local.upper()}@EXAMPLE.com")).status_code == 200

    async def test_an_invalid_email_is_refused(self, auth_client: httpx.AsyncClient):
        response = await register(auth_client, email="not-an-email")
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_email"

    async def test_me_without_a_token_is_401(self, auth_client: httpx.AsyncClient):
        response = await auth_client.get("/users/me")
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"


class TestDuplicateEmail:
    async def test_a_second_account_with_the_same_email_is_refused(self, auth_client: httpx.AsyncClient):
        email = unique_email()
        assert (await register(auth_client, email=email)).status_code == 201
        again = await register(auth_client, email=email.upper())
        assert again.status_code == 409
        assert again.json()["code"] == "email_taken"

    async def test_simultaneous_sign_ups_with_one_email_create_one_account(
        self, auth_client: httpx.AsyncClient, auth_sessions: async_sessionmaker[AsyncSession]
    ):
        email = unique_email()
        responses = await asyncio.gather(*(register(auth_client, email=email) for _ in range(6)))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 409, 409, 409, 409, 409]
        assert all(r.json()["code"] == "email_taken" for r in responses if r.status_code == 409)
        async with auth_sessions() as session:
            rows = (await session.scalars(select(User).where(col(User.email) == email))).all()
        assert len(rows) == 1


class TestWeakPassword:
    async def assert_refused(
        self, client: httpx.AsyncClient, password: str, *, email: str | None = None
    ) -> str:
        response = await register(client, email=email or unique_email(), password=password)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "weak_password"
        assert body["detail"]
        return str(body["detail"])

    async def test_a_short_password_is_refused_with_the_minimum_length(self, auth_client: httpx.AsyncClient):
        assert "at least 10 characters" in await self.assert_refused(auth_client, "Xq9!vT2#")

    async def test_a_too_long_password_is_refused(self, auth_client: httpx.AsyncClient):
        assert "at most 128" in await self.assert_refused(auth_client, "Xq9!vT2#kP" * 13)

    async def test_a_common_password_is_refused_with_advice(self, auth_client: httpx.AsyncClient):
        detail = await self.assert_refused(auth_client, "password1234")
        assert "too easy to guess" in detail

    async def test_a_keyboard_walk_is_refused(self, auth_client: httpx.AsyncClient):
        await self.assert_refused(auth_client, "qwertyuiop12")

    async def test_a_password_containing_the_email_name_is_refused(self, auth_client: httpx.AsyncClient):
        name = f"zorblax{uuid.uuid4().hex[:4]}"
        detail = await self.assert_refused(auth_client, f"{name}-Harbor-93!", email=f"{name}@example.com")
        assert "email" in detail

    async def test_a_strong_password_is_accepted(self, auth_client: httpx.AsyncClient):
        assert (await register(auth_client, password="correct horse battery staple")).status_code == 201


class TestLogin:
    async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        wrong = await login(auth_client, account.email, "not-the-password-123")
        unknown = await login(auth_client, unique_email())
        invalid = await login(auth_client, "not an email at all")
        for response in (wrong, unknown, invalid):
            assert response.status_code == 401
            body = response.json()
            assert body["code"] == "invalid_credentials"
            assert body["detail"] == wrong.json()["detail"]

    async def test_login_refuses_unknown_fields(self, auth_client: httpx.AsyncClient):
        response = await auth_client.post(
            "/auth/login", json={"email": unique_email(), "password": STRONG_PASSWORD, "role": "admin"}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


class TestLoginRateLimit:
    async def test_the_sixth_attempt_on_one_account_within_a_minute_is_429(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)  # one sign-in already counted
        for _ in range(4):
            assert (await login(auth_client, account.email, "wrong-password-123")).status_code == 401
        # From a new address, with the right password: the account itself is now limited.
        limited = await login(auth_client, account.email, ip=random_ip())
        assert limited.status_code == 429
        body = limited.json()
        assert body["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-limit"] == "5"
        assert limited.headers["ratelimit-remaining"] == "0"
        assert int(limited.headers["ratelimit-reset"]) >= 1
        assert limited.headers["content-type"] == "application/problem+json"

    async def test_one_address_trying_many_accounts_is_limited_at_twenty(
        self, auth_client: httpx.AsyncClient
    ):
        ip = random_ip()
        statuses = [(await login(auth_client, unique_email(), ip=ip)).status_code for _ in range(21)]
        assert statuses[:20] == [401] * 20
        assert statuses[20] == 429
        # Another address is not affected.
        assert (await login(auth_client, unique_email(), ip=random_ip())).status_code == 401

    async def test_the_first_x_forwarded_for_entry_is_the_client(self, auth_client: httpx.AsyncClient):
        ip = random_ip()
        for _ in range(20):
            response = await login(auth_client, unique_email(), ip=f"{ip}, {random_ip()}")
            assert response.status_code == 401
        assert (await login(auth_client, unique_email(), ip=ip)).status_code == 429


class TestProfile:
    async def test_display_name_bio_and_avatar_can_be_changed(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        response = await auth_client.patch(
            "/users/me",
            json={
                "display_name": "  New Name ",
                "bio": "I film birds.",
                "avatar_url": "https://cdn.example/a.png",
            },
            headers=account.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["display_name"] == "New Name"
        me = (await auth_client.get("/users/me", headers=account.headers)).json()
        assert (me["display_name"], me["bio"], me["avatar_url"]) == (
            "New Name",
            "I film birds.",
            "https://cdn.example/a.png",
        )
        cleared = await auth_client.patch("/users/me", json={"bio": None}, headers=account.headers)
        assert cleared.json()["bio"] is None
        assert cleared.json()["display_name"] == "New Name"

    async def test_an_avatar_that_is_not_a_url_and_an_empty_name_are_refused(
        self, auth_client: httpx.AsyncClient
    ):
        account = await signed_in(auth_client)
        for body in ({"avatar_url": "javascript:alert(1)"}, {"display_name": "   "}, {"display_name": None}):
            response = await auth_client.patch("/users/me", json=body, headers=account.headers)
            assert response.status_code == 422, body
            assert response.json()["code"] == "validation_error"


class TestMassAssignment:
    async def test_privileged_fields_cannot_be_set_through_the_profile(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        attempts = [
            {"role": "admin"},
            {"email_verified": True},
            {"balance": 1_000_000},
            {"email": unique_email()},
            {"id": str(uuid.uuid4())},
            {"display_name": "Sneaky", "role": "admin"},
        ]
        for body in attempts:
            response = await auth_client.patch("/users/me", json=body, headers=account.headers)
            assert response.status_code == 422, body
            assert response.json()["code"] == "validation_error"
        me = (await auth_client.get("/users/me", headers=account.headers)).json()
        assert me["role"] == "viewer"
        assert me["email_verified"] is False
        assert me["email"] == account.email
        assert me["id"] == account.user_id
        assert me["display_name"] == "Test User"

    async def test_a_role_cannot_be_chosen_at_sign_up(self, auth_client: httpx.AsyncClient):
        response = await auth_client.post(
            "/auth/register",
            json={"email": unique_email(), "password": STRONG_PASSWORD, "display_name": "X", "role": "admin"},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
