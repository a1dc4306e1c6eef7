"""Streaming test fixtures: the streaming app with its real peers in-process — the catalog app
(videos made ready through its own API) and the billing app (real ledger, sandbox top-ups) —
reached through ``ServiceClient(transport=httpx.ASGITransport(...))``; real PostgreSQL and Redis;
a clock the tests move (milliseconds), so units of 1 s and heartbeats of 2 s never make a test sleep.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from common.internal import SERVICE_TOKEN_HEADER, mint_service_token
from common.outbox import OutboxRelay
from common.storage import StorageSettings
from services.billing.app import create_app as create_billing_app
from services.billing.settings import BillingSettings
from services.catalog.app import create_app as create_catalog_app
from services.streaming.app import create_app as create_streaming_app
from services.streaming.service import Playback
from services.streaming.settings import StreamingSettings
from streamify.embedded import free_port
from tests.catalog.conftest import CatalogDriver, catalog_settings_for
from tests.conftest import migrated_database
from tests.identities import TokenMinter, User

UNIT_S = 1.0
HEARTBEAT_S = 2.0
MISSED = 3
GRACE_S = 5.0
MAX_SESSIONS = 3
PRICE = 7  # cents per unit: 1 cent platform fee (floor of 20%), 6 to the creator
DURATION_S = 61.5  # every ready test video (tests.catalog.conftest.READY_RESULT)


class FakeClock:
    """The streaming service's clock (ms): starts at the real time and moves only when told."""

    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "the clock only moves forward"
        self.now_ms += round(seconds * 1000)


def streaming_settings(
    database_url: str, redis_url: str, storage_dir: Path, **overrides: Any
) -> StreamingSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "storage": StorageSettings(storage_backend="local", storage_local_dir=storage_dir),
        "billing_unit_seconds": UNIT_S,
        "heartbeat_interval_seconds": HEARTBEAT_S,
        "missed_heartbeats_to_end": MISSED,
        "max_sessions_per_user": MAX_SESSIONS,
        "billing_grace_seconds": GRACE_S,
        "sweep_interval_s": 0,  # tests sweep when they choose (one test runs the lifespan task)
        "billing_timeout_s": 1.0,
        "billing_attempts": 2,
        **overrides,
    }
    return StreamingSettings(**values)


@pytest.fixture(scope="session")
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streaming-storage")


@pytest.fixture(scope="session")
async def catalog_app(
    asgi_client: Callable[..., Any], redis_url: str, storage_dir: Path, minter: TokenMinter
) -> AsyncIterator[FastAPI]:
    storage = StorageSettings(storage_backend="local", storage_local_dir=storage_dir)
    settings = catalog_settings_for(await migrated_database("catalog"), redis_url, storage)
    app = create_catalog_app(settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture(scope="session")
async def billing_app(
    asgi_client: Callable[..., Any], redis_url: str, minter: TokenMinter
) -> AsyncIterator[FastAPI]:
    settings = BillingSettings(
        database_url=await migrated_database("billing"), redis_url=redis_url, topup_min=1
    )
    app = create_billing_app(settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@asynccontextmanager
async def running_streaming_app(
    asgi_client: Callable[..., Any],
    settings: StreamingSettings,
    *,
    minter: TokenMinter,
    clock: FakeClock,
    catalog_app: FastAPI,
    billing_app: FastAPI | None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A streaming app with its lifespan running; ``billing_app=None`` leaves billing at its URL."""
    app = create_streaming_app(
        settings,
        jwks_loader=minter.loader,
        clock=clock,
        catalog_transport=httpx.ASGITransport(app=catalog_app),
        billing_transport=httpx.ASGITransport(app=billing_app) if billing_app is not None else None,
    )
    async with asgi_client(app) as client:
        yield app, client


@pytest.fixture(scope="session")
async def streaming_app(
    asgi_client: Callable[..., Any],
    redis_url: str,
    storage_dir: Path,
    minter: TokenMinter,
    clock: FakeClock,
    catalog_app: FastAPI,
    billing_app: FastAPI,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = streaming_settings(await migrated_database("streaming"), redis_url, storage_dir)
    async with running_streaming_app(
        asgi_client, settings, minter=minter, clock=clock, catalog_app=catalog_app, billing_app=billing_app
    ) as running:
        yield running


@pytest.fixture(scope="session")
async def streaming_without_billing(
    asgi_client: Callable[..., Any],
    redis_url: str,
    storage_dir: Path,
    minter: TokenMinter,
    clock: FakeClock,
    catalog_app: FastAPI,
) -> AsyncIterator[httpx.AsyncClient]:
    """A second replica (same database, same Redis) whose billing URL is a closed port."""
    settings = streaming_settings(
        await migrated_database("streaming"),
        redis_url,
        storage_dir,
        billing_url=f"http://127.0.0.1:{free_port()}",
        billing_attempts=1,  # the retry that matters is the next heartbeat's, with the same key
    )
    async with running_streaming_app(
        asgi_client, settings, minter=minter, clock=clock, catalog_app=catalog_app, billing_app=None
    ) as (_, client):
        yield client


class Player:
    """What tests do with the three services: make videos, fund wallets, play, read the ledger."""

    def __init__(
        self,
        *,
        app: FastAPI,
        client: httpx.AsyncClient,
        catalog: CatalogDriver,
        billing: httpx.AsyncClient,
        billing_app: FastAPI,
        minter: TokenMinter,
        clock: FakeClock,
        redis: Redis,
    ) -> None:
        self.app = app
        self.client = client
        self.catalog = catalog
        self.billing = billing
        self.billing_app = billing_app
        self.minter = minter
        self.clock = clock
        self.redis = redis

    @property
    def playback(self) -> Playback:
        playback: Playback = self.app.state.playback
        return playback

    def user(self, role: str = "viewer") -> User:
        user_id = uuid.uuid4()
        return User(id=user_id, role=role, token=self.minter.token(user_id, role))

    async def relayed(self) -> None:
        """Everything streaming committed so far (session starts and ends) is on the event stream."""
        outbox: OutboxRelay = self.app.state.outbox
        await outbox.drain()

    async def video(self, *, price: int = PRICE, owner: User | None = None, **fields: Any) -> str:
        """A ready video (through catalog's own API); its id."""
        video = await self.catalog.ready_video(owner, price_per_minute=price, **fields)
        return str(video["id"])

    async def top_up(self, user: User, amount: int) -> int:
        response = await self.billing.post(
            "/wallet/topups",
            json={"amount": amount, "payment_method": "test_card"},
            headers={**user.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        balance: int = response.json()["balance"]
        return balance

    async def balance(self, user: User) -> int:
        response = await self.billing.get(
            f"/internal/wallets/{user.id}",
            headers={
                SERVICE_TOKEN_HEADER: mint_service_token(
                    self.billing_app.state.settings.internal_secret, "test"
                )
            },
        )
        assert response.status_code == 200, response.text
        balance: int = response.json()["balance"]
        return balance

    async def charged_units(self, user: User, session_id: str) -> list[int]:
        """The units of ``session_id`` in the viewer's ledger statement, in order."""
        units: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            response = await self.billing.get("/wallet/transactions", params=params, headers=user.headers)
            assert response.status_code == 200, response.text
            page = response.json()
            units += [
                item["unit"]
                for item in page["items"]
                if item["kind"] == "charge" and item["session_id"] == session_id
            ]
            cursor = page["next_cursor"]
            if not cursor:
                return sorted(units)

    async def start(
        self, user: User, video_id: str, client: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        return await (client or self.client).post(
            "/playback/sessions", json={"video_id": video_id}, headers=user.headers
        )

    async def started(self, user: User, video_id: str) -> dict[str, Any]:
        response = await self.start(user, video_id)
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        return session

    async def beat(
        self,
        user: User,
        session_id: str,
        position_s: float,
        state: str = "playing",
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await (client or self.client).post(
            f"/playback/sessions/{session_id}/heartbeat",
            json={"position_s": position_s, "state": state},
            headers=user.headers,
        )

    async def beat_ok(
        self, user: User, session_id: str, position_s: float, state: str = "playing"
    ) -> dict[str, Any]:
        response = await self.beat(user, session_id, position_s, state)
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()
        return reply

    async def play(
        self, user: User, session_id: str, *, seconds: float, step_s: float = HEARTBEAT_S
    ) -> dict[str, Any]:
        """An honest player: ``seconds`` of playing from where it is, one heartbeat per ``step_s``."""
        session = await self.get(user, session_id)
        position = session["position_s"]
        reply: dict[str, Any] = {}
        elapsed = 0.0
        while elapsed < seconds - 1e-9:
            step = min(step_s, seconds - elapsed)
            self.clock.advance(step)
            position += step
            elapsed += step
            reply = await self.beat_ok(user, session_id, position)
        return reply

    async def get(self, user: User, session_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/playback/sessions/{session_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def end(self, user: User, session_id: str) -> httpx.Response:
        return await self.client.post(f"/playback/sessions/{session_id}/end", headers=user.headers)

    async def history(self, user: User, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/users/me/history", params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
async def player(
    streaming_app: tuple[FastAPI, httpx.AsyncClient],
    catalog_app: FastAPI,
    billing_app: FastAPI,
    minter: TokenMinter,
    clock: FakeClock,
    redis: Redis,
) -> AsyncIterator[Player]:
    app, client = streaming_app
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=catalog_app), base_url="http://catalog"
        ) as catalog,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=billing_app), base_url="http://billing"
        ) as billing,
    ):
        yield Player(
            app=app,
            client=client,
            catalog=CatalogDriver(catalog_app, catalog, minter),
            billing=billing,
            billing_app=billing_app,
            minter=minter,
            clock=clock,
            redis=redis,
        )
