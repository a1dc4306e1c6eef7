"""Billing test fixtures: the billing app on the run's migrated database with real Redis, access
tokens from ``tests.identities`` (the app trusts the minter's key), service credentials for the
internal API, and a driver for the steps most tests share.

Every test works with fresh user ids, so tests share one database without seeing each other's
money; the platform revenue account is shared, so tests compare it before and after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from common.db import asyncpg_dsn
from common.events import EVENT_STREAM, Event, decode_event
from common.internal import SERVICE_TOKEN_HEADER, mint_service_token
from services.billing.app import create_app
from services.billing.settings import BillingSettings
from services.billing.verify import LedgerReport, check_ledger
from tests.conftest import migrated_database
from tests.identities import TokenMinter, User

USD = "USD"


def charge_body(
    *,
    viewer: uuid.UUID,
    creator: uuid.UUID | None = None,
    video: uuid.UUID | None = None,
    session: uuid.UUID | None = None,
    unit: int = 0,
    amount: int = 100,
    currency: str = USD,
) -> dict[str, Any]:
    """A charge as the streaming service sends it."""
    session = session or uuid.uuid4()
    return {
        "key": f"{session}:{unit}",
        "session_id": str(session),
        "unit": unit,
        "viewer_id": str(viewer),
        "creator_id": str(creator or uuid.uuid4()),
        "video_id": str(video or uuid.uuid4()),
        "amount": amount,
        "currency": currency,
    }


class BillingDriver:
    """The steps most tests share, through the API wherever the API offers them."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.app = app
        self.client = client
        self.minter = minter

    @property
    def settings(self) -> BillingSettings:
        settings: BillingSettings = self.app.state.settings
        return settings

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.billing.ledger
        return pool

    def user(self, role: str = "viewer") -> User:
        user_id = uuid.uuid4()
        return User(id=user_id, role=role, token=self.minter.token(user_id, role))

    def internal_headers(self, caller: str = "streaming") -> dict[str, str]:
        return {SERVICE_TOKEN_HEADER: mint_service_token(self.settings.internal_secret, caller)}

    async def topup(
        self, user: User, amount: int, *, key: str | None = None, method: str = "test_card"
    ) -> httpx.Response:
        headers = dict(user.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.client.post(
            "/wallet/topups", json={"amount": amount, "payment_method": method}, headers=headers
        )

    async def fund(self, user: User, amount: int) -> None:
        response = await self.topup(user, amount, key=uuid.uuid4().hex)
        assert response.status_code == 201, response.text

    async def charge(self, body: dict[str, Any], *, caller: str = "streaming") -> httpx.Response:
        return await self.client.post("/internal/charges", json=body, headers=self.internal_headers(caller))

    async def balance(self, user: User | uuid.UUID) -> int:
        user_id = user.id if isinstance(user, User) else user
        response = await self.client.get(f"/internal/wallets/{user_id}", headers=self.internal_headers())
        assert response.status_code == 200, response.text
        return int(response.json()["balance"])

    async def earnings(self, creator: User) -> dict[str, Any]:
        response = await self.client.get("/creator/earnings", headers=creator.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def refund(
        self, admin: User, charge_id: str, amount: int | None = None, *, key: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"transaction_id": charge_id}
        if amount is not None:
            body["amount"] = amount
        headers = {**admin.headers, "Idempotency-Key": key or uuid.uuid4().hex}
        return await self.client.post("/admin/refunds", json=body, headers=headers)

    async def platform_revenue(self) -> int:
        total = await self.pool.fetchval(
            "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN accounts a ON a.id = e.account_id"
            " WHERE a.kind = 'platform'"
        )
        return int(total)

    async def transactions_with_key(self, key: str) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM transactions WHERE key = $1", key))

    async def verify(self) -> LedgerReport:
        async with self.pool.acquire() as connection:
            return await check_ledger(connection)

    async def events(self, type_: str) -> list[Event]:
        """The stream's events of ``type_``, once everything committed so far has been relayed."""
        await self.app.state.billing.outbox.drain()
        redis = self.app.state.redis
        events = [decode_event(fields) for _, fields in await redis.xrange(EVENT_STREAM)]
        return [event for event in events if event.type == type_]


@pytest.fixture(scope="session")
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture(scope="session")
async def billing_database_url() -> str:
    return await migrated_database("billing")


@pytest.fixture(scope="session")
def billing_settings(
    billing_database_url: str, redis_url: str, service_env: dict[str, str]
) -> BillingSettings:
    return BillingSettings(database_url=billing_database_url, redis_url=redis_url)


@pytest.fixture(scope="session")
async def billing_app(
    asgi_client: Callable[..., Any], billing_settings: BillingSettings, minter: TokenMinter
) -> AsyncIterator[FastAPI]:
    """The billing service with its lifespan running for the whole session."""
    app = create_app(billing_settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture
async def billing(billing_app: FastAPI, minter: TokenMinter) -> AsyncIterator[BillingDriver]:
    transport = httpx.ASGITransport(app=billing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield BillingDriver(billing_app, client, minter)


async def raw_connection(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(database_url))
