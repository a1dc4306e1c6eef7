"""Auth test fixtures: the auth app on the run's migrated database with real Redis, one client per
test (each with its own source address), and direct database access for checking stored state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import drop_database, ensure_database
from common.migrations import upgrade
from services.auth.app import create_app
from services.auth.settings import AuthSettings
from tests.auth.helpers import random_ip
from tests.conftest import migrated_database
from tests.conftest import test_database_url as database_url_for

# Cheap argon2id parameters: tests exercise the logic, not the cost.
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8192, "argon2_parallelism": 1}


def auth_settings_for(database_url: str, redis_url: str, **overrides: Any) -> AuthSettings:
    return AuthSettings(database_url=database_url, redis_url=redis_url, **{**FAST_HASHING, **overrides})


@pytest.fixture(scope="session")
async def auth_database_url() -> str:
    return await migrated_database("auth")


@pytest.fixture(scope="session")
def auth_settings(auth_database_url: str, redis_url: str, service_env: dict[str, str]) -> AuthSettings:
    return auth_settings_for(auth_database_url, redis_url)


@pytest.fixture(scope="session")
async def auth_app(asgi_client: Callable[..., Any], auth_settings: AuthSettings) -> AsyncIterator[FastAPI]:
    """The auth service with its lifespan running for the whole session."""
    app = create_app(auth_settings)
    async with asgi_client(app):
        yield app


def client_for(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"X-Forwarded-For": random_ip(), **headers},
    )


@pytest.fixture
async def auth_client(auth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running auth service, arriving from its own (gateway-forwarded) address."""
    async with client_for(auth_app) as client:
        yield client


@pytest.fixture
def auth_sessions(auth_app: FastAPI) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = auth_app.state.sessions
    return sessions


@pytest.fixture(scope="session")
async def isolated_auth_database(service_env: dict[str, str]) -> AsyncIterator[str]:
    """A second, private auth database for tests that rotate signing keys (others keep theirs)."""
    url = database_url_for("auth_keys")
    await drop_database(url)
    await ensure_database(url)
    await asyncio.to_thread(upgrade, "services.auth", url)
    yield url
    await drop_database(url)
