"""Refresh tokens do not pile up for ever: a day after they expire they are deleted, with the
sign-ins (families) left without tokens, by a purge each auth replica runs periodically."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth.app import create_app
from services.auth.service import purge_refresh_tokens
from tests.auth.conftest import auth_settings_for, client_for
from tests.auth.helpers import Account, signed_in


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def backdate(
    sessions: async_sessionmaker[AsyncSession],
    account: Account,
    *,
    expired: timedelta,
    signed_in_ago: timedelta,
) -> None:
    """Make every refresh token of ``account`` expired ``expired`` ago, its sign-ins older still."""
    async with sessions() as session, session.begin():
        values = {"u": uuid.UUID(account.user_id), "expired": expired, "ago": signed_in_ago}
        await session.execute(
            text(
                "UPDATE refresh_tokens SET expires_at = now() - CAST(:expired AS interval) WHERE user_id = :u"
            ),
            values,
        )
        await session.execute(
            text(
                "UPDATE refresh_families SET created_at = now() - CAST(:ago AS interval) WHERE user_id = :u"
            ),
            values,
        )


async def rows_of(sessions: async_sessionmaker[AsyncSession], account: Account) -> tuple[int, int]:
    """(refresh tokens, families) the account has in the database."""
    async with sessions() as session:
        user = uuid.UUID(account.user_id)
        tokens = await session.scalar(
            text("SELECT count(*) FROM refresh_tokens WHERE user_id = :u"), {"u": user}
        )
        families = await session.scalar(
            text("SELECT count(*) FROM refresh_families WHERE user_id = :u"), {"u": user}
        )
    return int(tokens or 0), int(families or 0)


class TestThePurge:
    async def test_deletes_tokens_a_day_past_expiry_and_their_empty_sign_ins_and_nothing_else(
        self, auth_client: httpx.AsyncClient, auth_sessions: async_sessionmaker[AsyncSession]
    ):
        gone = await signed_in(auth_client)
        rotated = await refresh(auth_client, gone.refresh_token)  # a spent token and its successor
        assert rotated.status_code == 200
        await backdate(auth_sessions, gone, expired=timedelta(days=2), signed_in_ago=timedelta(days=10))
        recent = await signed_in(auth_client)
        await backdate(auth_sessions, recent, expired=timedelta(hours=1), signed_in_ago=timedelta(days=10))
        live = await signed_in(auth_client)
        assert await rows_of(auth_sessions, gone) == (2, 1)

        tokens, families = await purge_refresh_tokens(auth_sessions)

        assert tokens >= 2 and families >= 1
        assert await rows_of(auth_sessions, gone) == (0, 0)
        assert await rows_of(auth_sessions, recent) == (1, 1)  # expired, but within the day
        assert (await refresh(auth_client, gone.refresh_token)).status_code == 401
        answer = await refresh(auth_client, live.refresh_token)
        assert answer.status_code == 200, answer.text

    async def test_a_replica_purges_on_its_own_while_it_runs(
        self, asgi_client: Callable[..., Any], auth_database_url: str, redis_url: str
    ):
        app: FastAPI = create_app(
            auth_settings_for(auth_database_url, redis_url, refresh_purge_interval_s=0.05)
        )
        async with asgi_client(app):
            sessions: async_sessionmaker[AsyncSession] = app.state.sessions
            async with client_for(app) as client:
                account = await signed_in(client)
            await backdate(sessions, account, expired=timedelta(days=3), signed_in_ago=timedelta(days=9))
            deadline = time.monotonic() + 10
            while await rows_of(sessions, account) != (0, 0):
                assert time.monotonic() < deadline, "the periodic purge did not run"
                await asyncio.sleep(0.05)
