"""Auth rules below the HTTP layer: email normalisation, password rules, admin creation,
password rehashing, signing-key life cycle, cursors."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from starlette.requests import Request

from common.db import create_engine, session_factory
from services.auth.admin import create_admin
from services.auth.api import client_ip
from services.auth.app import create_app
from services.auth.credentials import normalize_email, password_weakness
from services.auth.errors import InvalidCursor, InvalidEmail, WeakPassword
from services.auth.keys import (
    KeyState,
    decode_private_key,
    ensure_signing_keys,
    load_published_keys,
    rotate_signing_keys,
)
from services.auth.models import SigningKey, User
from services.auth.pagination import decode_cursor, encode_cursor
from services.auth.settings import AuthSettings
from tests.auth.conftest import auth_settings_for, client_for
from tests.auth.helpers import STRONG_PASSWORD, claims_of, login, register, unique_email

# --- email normalisation --------------------------------------------------------------------

local_parts = st.from_regex(r"\A[a-zA-Z0-9](?:[a-zA-Z0-9_+-]{0,20}(?:\.[a-zA-Z0-9_+-]{1,10}){0,2})?\Z")
# (no "--" in a label: "xn--" style labels are reserved for IDNA)
labels = st.from_regex(r"\A[a-zA-Z][a-zA-Z0-9]{0,10}(?:-[a-zA-Z0-9]{1,5})?\Z")
domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]),
    st.lists(labels, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "net", "io", "de", "CoM"]),
)
emails = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
blank = st.text(alphabet=" \t\n", max_size=3)


class TestEmailNormalisation:
    @given(email=emails, before=blank, after=blank)
    @settings(max_examples=200, deadline=None)
    def test_case_and_surrounding_spaces_never_make_a_different_account(
        self, email: str, before: str, after: str
    ):
        normalized = normalize_email(email)
        assert normalized == normalized.lower() == normalized.strip()
        assert normalize_email(f"{before}{email.swapcase()}{after}") == normalized
        assert normalize_email(normalized) == normalized  # idempotent

    @given(email=emails)
    @settings(max_examples=100, deadline=None)
    def test_the_address_is_kept_apart_from_case(self, email: str):
        assert normalize_email(email) == email.lower()

    @pytest.mark.parametrize(
        "raw", ["", "   ", "plainaddress", "@example.com", "a@", "a@b", "a..b@example.com", "a@exa mple.com"]
    )
    def test_malformed_addresses_are_refused(self, raw: str):
        with pytest.raises(InvalidEmail):
            normalize_email(raw)

    def test_an_internationalised_domain_is_normalised(self):
        assert normalize_email("Jo@BÜCHER.example") == "jo@bücher.example"


# --- password rules ---------------------------------------------------------------------------


class TestPasswordRules:
    @pytest.mark.parametrize(
        ("password", "reason"),
        [
            ("Sh0rt!pw", "at least 10"),
            ("a" * 129, "at most 128"),
            ("1234567890", "too easy"),
            ("iloveyou2024", "too easy"),
            ("aaaaaaaaaaaa", "too easy"),
            ("marguerite-duras-93", "email"),
        ],
    )
    def test_weak_passwords_are_refused_with_a_reason(self, password: str, reason: str):
        weakness = password_weakness(password, email="marguerite-duras@example.com")
        assert weakness is not None and reason in weakness

    def test_the_display_name_counts_as_a_guess(self):
        assert password_weakness("Quokkamatic1999", email="x@example.com") is None
        assert (
            password_weakness("Quokkamatic1999", email="x@example.com", display_name="Quokkamatic")
            is not None
        )

    @pytest.mark.parametrize("password", [STRONG_PASSWORD, "correct horse battery staple", "x8#kLm2!pQ9z"])
    def test_strong_passwords_pass(self, password: str):
        assert password_weakness(password, email="someone@example.com") is None


# --- client address ---------------------------------------------------------------------------


def request_with(forwarded: str | None, peer: str = "192.0.2.7") -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "headers": headers, "client": (peer, 4000)})


class TestClientAddress:
    settings = AuthSettings(database_url="postgresql+asyncpg://x@127.0.0.1/x")

    @pytest.mark.parametrize(
        ("forwarded", "expected"),
        [
            ("203.0.113.5", "203.0.113.5"),
            ("203.0.113.5, 10.0.0.1", "203.0.113.5"),
            (" 2001:db8::1 ,10.0.0.1", "2001:db8::1"),
            ("", "192.0.2.7"),
            ("not-an-ip", "192.0.2.7"),
            (None, "192.0.2.7"),
        ],
    )
    def test_the_first_forwarded_entry_or_the_peer(self, forwarded: str | None, expected: str):
        assert client_ip(request_with(forwarded), self.settings) == expected

    def test_forwarded_for_is_ignored_when_not_behind_the_gateway(self):
        direct = self.settings.model_copy(update={"trust_forwarded_for": False})
        assert client_ip(request_with("203.0.113.5"), direct) == "192.0.2.7"


# --- create-admin -----------------------------------------------------------------------------


class TestCreateAdmin:
    async def test_a_new_admin_can_sign_in_with_the_admin_role(
        self, auth_database_url: str, auth_client: httpx.AsyncClient
    ):
        email = unique_email("admin")
        user_id = await create_admin(auth_database_url, email, STRONG_PASSWORD, "Root")
        assert isinstance(user_id, uuid.UUID)
        tokens = (await login(auth_client, email)).json()
        assert claims_of(tokens["access_token"])["role"] == "admin"
        assert claims_of(tokens["access_token"])["sub"] == str(user_id)

    async def test_an_existing_account_is_promoted_and_keeps_its_password(
        self, auth_database_url: str, auth_client: httpx.AsyncClient
    ):
        email = unique_email()
        registered = (await register(auth_client, email=email)).json()
        user_id = await create_admin(auth_database_url, email.upper(), "a-different-Passw0rd!", "Ignored")
        assert str(user_id) == registered["id"]
        tokens = (await login(auth_client, email, STRONG_PASSWORD)).json()
        assert claims_of(tokens["access_token"])["role"] == "admin"
        # Running it twice is harmless.
        assert await create_admin(auth_database_url, email, STRONG_PASSWORD, "Root") == user_id

    async def test_a_weak_password_or_a_bad_email_is_refused(self, auth_database_url: str):
        with pytest.raises(WeakPassword):
            await create_admin(auth_database_url, unique_email(), "password", "Root")
        with pytest.raises(InvalidEmail):
            await create_admin(auth_database_url, "root@", STRONG_PASSWORD, "Root")


# --- rehash on login --------------------------------------------------------------------------


class TestRehashOnLogin:
    async def test_a_hash_made_with_old_parameters_is_upgraded_at_the_next_sign_in(
        self,
        asgi_client: Any,
        auth_client: httpx.AsyncClient,
        auth_database_url: str,
        redis_url: str,
        auth_sessions: async_sessionmaker[AsyncSession],
    ):
        email = unique_email()
        assert (await register(auth_client, email=email)).status_code == 201

        async def stored_hash() -> str:
            async with auth_sessions() as session:
                statement = select(col(User.password_hash)).where(col(User.email) == email)
                return str((await session.scalars(statement)).one())

        old = await stored_hash()
        assert "t=1," in old
        stronger = create_app(auth_settings_for(auth_database_url, redis_url, argon2_time_cost=2))
        async with asgi_client(stronger), client_for(stronger) as client:
            assert (await login(client, email)).status_code == 200
            new = await stored_hash()
            assert new != old and new.startswith("$argon2id$") and "t=2," in new
            assert (await login(client, email)).status_code == 200  # the new hash verifies
        assert (await login(auth_client, email)).status_code == 200


# --- signing keys -----------------------------------------------------------------------------


class TestSigningKeyLifecycle:
    async def test_keys_are_created_rotated_retired_and_finally_dropped(self, isolated_auth_database: str):
        engine = create_engine(isolated_auth_database, pool_size=2)
        sessions = session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                await ensure_signing_keys(session)
                assert await ensure_signing_keys(session) == []  # idempotent
                before = {k.state: k.kid for k in await load_published_keys(session)}
                assert set(before) == {KeyState.current, KeyState.next}

            async with sessions() as session, session.begin():
                promoted = await rotate_signing_keys(session)
                keys = await load_published_keys(session)
                states = {k.kid: k.state for k in keys}
                assert promoted == before[KeyState.next]
                assert states[before[KeyState.current]] is KeyState.retired
                assert states[promoted] is KeyState.current
                assert [k.state for k in keys] == [KeyState.current, KeyState.next, KeyState.retired]
                retired = next(k for k in keys if k.state is KeyState.retired)
                assert retired.retired_at is not None and retired.retired_at <= datetime.now(UTC)

                # Once every token it signed has expired, a retired key leaves the JWKS...
                assert before[KeyState.current] not in {
                    k.kid for k in await load_published_keys(session, retire_after_s=0)
                }
                # ...and a rotation deletes it (with no grace at all, even the key it retires).
                await rotate_signing_keys(session, retire_after_s=0)
                remaining = (await session.scalars(select(col(SigningKey.state)))).all()
                assert sorted(remaining) == ["current", "next"]
        finally:
            await engine.dispose()

    async def test_one_current_and_one_next_key_at_most_even_when_forced(self, isolated_auth_database: str):
        engine = create_engine(isolated_auth_database, pool_size=2)
        try:
            async with session_factory(engine)() as session:
                with pytest.raises(Exception, match="uq_signing_keys_current"):
                    await session.execute(
                        text(
                            "INSERT INTO signing_keys (kid, private_pem, state) VALUES ('x', 'x', 'current')"
                        )
                    )
        finally:
            await engine.dispose()

    async def test_private_keys_are_encrypted_at_rest_when_a_passphrase_is_set(
        self, isolated_auth_database: str
    ):
        engine = create_engine(isolated_auth_database, pool_size=2)
        try:
            async with session_factory(engine)() as session:
                await rotate_signing_keys(session, passphrase="correct horse")
                newest = (
                    await session.scalars(
                        select(SigningKey).order_by(col(SigningKey.created_at).desc()).limit(1)
                    )
                ).one()
                assert newest.private_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                decode_private_key(newest.private_pem, "correct horse")
                with pytest.raises((ValueError, TypeError)):
                    decode_private_key(newest.private_pem, "")
                await session.rollback()  # leave the database's keys readable without a passphrase
        finally:
            await engine.dispose()

    def test_production_refuses_unencrypted_signing_keys(self):
        with pytest.raises(ValueError, match="signing_key_passphrase"):
            AuthSettings(
                database_url="postgresql+asyncpg://x@db/x",
                environment="production",
                internal_secret="a-real-internal-secret-that-is-long-enough",
                signing_key_passphrase="",
            )

    def test_the_refresh_cookie_is_secure_except_in_development(self):
        url = "postgresql+asyncpg://x@db/x"
        assert AuthSettings(database_url=url, environment="test").refresh_cookie_secure is True
        assert AuthSettings(database_url=url, environment="development").refresh_cookie_secure is False
        assert (
            AuthSettings(
                database_url=url, environment="development", cookie_secure=True
            ).refresh_cookie_secure
            is True
        )


# --- cursors ----------------------------------------------------------------------------------


class TestCursors:
    @given(moment=st.datetimes(timezones=st.just(UTC)), item=st.uuids())
    def test_a_cursor_round_trips(self, moment: datetime, item: uuid.UUID):
        assert decode_cursor(encode_cursor(moment, item)) == (moment, item)

    @given(garbage=st.text(max_size=80))
    def test_garbage_is_an_invalid_cursor_never_a_crash(self, garbage: str):
        with contextlib.suppress(InvalidCursor):
            decode_cursor(garbage)
