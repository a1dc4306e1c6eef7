"""Fixtures every test folder shares: real PostgreSQL and Redis, migrated service databases,
and an httpx client over ASGI for one service with its lifespan running.

PostgreSQL and Redis come from ``STREAMIFY_TEST_DATABASE_URL`` / ``STREAMIFY_TEST_REDIS_URL``
(``make test`` writes them to ``.data/testenv.env`` after making sure both answer, starting the
machine's servers or embedded ones when needed).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis

from common.db import drop_database, ensure_database
from common.migrations import upgrade

pytest_plugins = ["tests.fixtures_s3"]

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "catalog", "streaming", "billing", "analytics")


def _load_testenv() -> None:
    env_file = ROOT / ".data" / "testenv.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and value:
                os.environ.setdefault(key.strip(), value.strip())


_load_testenv()
PG_BASE = os.environ.get("STREAMIFY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN_ID = uuid.uuid4().hex[:8]


_run_databases: set[str] = set()


def test_database_url(service: str) -> str:
    """A database of this test run for ``service``; the run id keeps concurrent runs apart.

    Every database named here is dropped when the session ends.
    """
    url = f"{PG_BASE.rstrip('/')}/streamify_test_{RUN_ID}_{service}"
    _run_databases.add(url)
    return url


@pytest.fixture(scope="session", autouse=True)
async def _drop_run_databases() -> AsyncIterator[None]:
    yield
    for url in sorted(_run_databases):
        try:
            await drop_database(url)
        except Exception as exc:  # a leftover database is untidy, not a failed run
            print(f"could not drop {url}: {exc}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


_migrated: dict[str, str] = {}


async def migrated_database(service: str) -> str:
    """The service's test database, fresh and migrated to head once per run."""
    if service not in _migrated:
        url = test_database_url(service)
        await drop_database(url)
        await ensure_database(url)
        await asyncio.to_thread(upgrade, f"services.{service}", url)
        _migrated[service] = url
    return _migrated[service]


@pytest.fixture(scope="session")
def base_env(redis_url: str) -> dict[str, str]:
    """Environment shared by every component under test (short-lived, test-only secrets)."""
    return {
        "ENVIRONMENT": "test",
        "REDIS_URL": redis_url,
        "INTERNAL_SECRET": f"test-internal-secret-{RUN_ID}-{RUN_ID}-{RUN_ID}",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="session")
def service_env(base_env: dict[str, str], monkeypatch_session: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in base_env.items():
        monkeypatch_session.setenv(key, value)
    return base_env


@pytest.fixture(scope="session")
def monkeypatch_session() -> Any:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


ServiceClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
async def asgi_client(service_env: dict[str, str], redis: Redis) -> AsyncIterator[Callable[[FastAPI], Any]]:
    """``async with asgi_client(app) as client`` runs the app's lifespan and talks to it over ASGI."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_client(app: FastAPI, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", **kwargs
            ) as client:
                yield client

    yield open_client
