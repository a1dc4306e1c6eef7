"""Analytics fixtures: the service on the run's migrated database, with its event consumer off so
tests hand batches to the real handler (``app.state.ingest``) — or run a real consumer on a
per-test stream — and read the results over the API with tokens from ``tests.identities``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from common.events import Event, new_event
from services.analytics.app import create_app
from services.analytics.settings import AnalyticsSettings
from tests.conftest import migrated_database
from tests.identities import TokenMinter, User

# Every test (and hypothesis example) gets days of its own, far from today and from each other, so
# platform-wide rows (one per day) are not shared between tests.
_days = count()


def fresh_day() -> datetime:
    """Noon (UTC) of a day no other test uses."""
    base = datetime.fromisoformat("2031-01-01T12:00:00+00:00")
    return base + timedelta(days=next(_days) * 3)


class History:
    """Builds the events of a made-up platform history with the producers' payload shapes."""

    def __init__(self, start: datetime) -> None:
        self.start = start

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def video_created(
        self, video: uuid.UUID, creator: uuid.UUID, *, title: str = "Film", t: float = 0
    ) -> Event:
        payload = {
            "video_id": str(video),
            "creator_id": str(creator),
            "title": title,
            "price_per_minute": 10,
            "currency": "USD",
        }
        return new_event(
            "catalog.video_created", payload, producer="catalog", key=str(video), occurred_at=self.at(t)
        )

    def video_ready(self, video: uuid.UUID, creator: uuid.UUID, *, duration_s: float, t: float = 0) -> Event:
        payload = {
            "video_id": str(video),
            "creator_id": str(creator),
            "duration_s": duration_s,
            "renditions": ["360p"],
        }
        return new_event(
            "catalog.video_ready", payload, producer="catalog", key=str(video), occurred_at=self.at(t)
        )

    def video_failed(self, video: uuid.UUID, creator: uuid.UUID, *, t: float = 0) -> Event:
        payload = {"video_id": str(video), "creator_id": str(creator), "reason": "not a video"}
        return new_event(
            "catalog.video_failed", payload, producer="catalog", key=str(video), occurred_at=self.at(t)
        )

    @staticmethod
    def _ids(session: uuid.UUID, video: uuid.UUID, viewer: uuid.UUID, creator: uuid.UUID) -> dict[str, str]:
        return {
            "session_id": str(session),
            "viewer_id": str(viewer),
            "video_id": str(video),
            "creator_id": str(creator),
        }

    def started(
        self,
        session: uuid.UUID,
        video: uuid.UUID,
        viewer: uuid.UUID,
        creator: uuid.UUID,
        *,
        duration_s: float | None,
        t: float = 0,
    ) -> Event:
        payload = {
            **self._ids(session, video, viewer, creator),
            "paid": True,
            "price_per_minute": 10,
            "currency": "USD",
            "billing_unit_s": 60,
            "duration_s": duration_s,
        }
        return new_event(
            "playback.session_started",
            payload,
            producer="streaming",
            key=str(session),
            occurred_at=self.at(t),
        )

    def heartbeat(
        self,
        session: uuid.UUID,
        video: uuid.UUID,
        viewer: uuid.UUID,
        creator: uuid.UUID,
        *,
        watched_s: float,
        position_s: float,
        duration_s: float | None,
        t: float,
    ) -> Event:
        payload = {
            **self._ids(session, video, viewer, creator),
            "position_s": position_s,
            "watched_s": watched_s,
            "duration_s": duration_s,
            "playing": True,
            "billed_units": 1,
            "status": "active",
        }
        return new_event("playback.heartbeat", payload, producer="streaming", occurred_at=self.at(t))

    def ended(
        self,
        session: uuid.UUID,
        video: uuid.UUID,
        viewer: uuid.UUID,
        creator: uuid.UUID,
        *,
        watched_s: float,
        position_s: float,
        duration_s: float | None,
        completed: bool,
        t: float,
    ) -> Event:
        payload = {
            **self._ids(session, video, viewer, creator),
            "reason": "ended_by_viewer",
            "paid": True,
            "billed_units": 1,
            "charged_total": 10,
            "currency": "USD",
            "watched_s": watched_s,
            "position_s": position_s,
            "duration_s": duration_s,
            "completed": completed,
            "started_at": self.start.isoformat(),
            "ended_at": self.at(t).isoformat(),
        }
        return new_event(
            "playback.session_ended", payload, producer="streaming", key=str(session), occurred_at=self.at(t)
        )

    def charged(
        self,
        session: uuid.UUID,
        unit: int,
        video: uuid.UUID,
        viewer: uuid.UUID,
        creator: uuid.UUID,
        *,
        amount: int,
        fee: int,
        t: float,
    ) -> Event:
        key = f"{session}:{unit}"
        payload = {
            "transaction_id": str(uuid.uuid4()),
            "key": key,
            "session_id": str(session),
            "unit": unit,
            "viewer_id": str(viewer),
            "creator_id": str(creator),
            "video_id": str(video),
            "amount": amount,
            "creator_share": amount - fee,
            "platform_fee": fee,
            "currency": "USD",
        }
        return new_event("billing.unit_charged", payload, producer="billing", key=key, occurred_at=self.at(t))

    def refunded(self, charge: Event, *, amount: int, fee: int, t: float) -> Event:
        p = charge.payload
        payload = {
            "transaction_id": str(uuid.uuid4()),
            "refund_of": p["transaction_id"],
            "charge_key": p["key"],
            "viewer_id": p["viewer_id"],
            "creator_id": p["creator_id"],
            "video_id": p["video_id"],
            "amount": amount,
            "creator_part": amount - fee,
            "platform_part": fee,
            "currency": "USD",
            "actor_id": str(uuid.uuid4()),
        }
        return new_event("billing.refund_issued", payload, producer="billing", occurred_at=self.at(t))


class Analytics:
    """The app, its API and its handler."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.app = app
        self.client = client
        self.minter = minter

    def user(self, role: str = "viewer", user_id: uuid.UUID | None = None) -> User:
        user_id = user_id or uuid.uuid4()
        return User(id=user_id, role=role, token=self.minter.token(user_id, role))

    async def ingest(self, *batches: list[Event]) -> None:
        for batch in batches:
            await self.app.state.ingest.handle(batch)

    async def get(self, path: str, user: User, **params: Any) -> dict[str, Any]:
        response = await self.client.get(path, headers=user.headers, params=params)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture(scope="session")
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture(scope="session")
async def analytics_settings(redis_url: str, service_env: dict[str, str]) -> AnalyticsSettings:
    url = await migrated_database("analytics")
    return AnalyticsSettings(database_url=url, redis_url=redis_url, consume_events=False)


@pytest.fixture(scope="session")
async def analytics_app(
    asgi_client: Callable[..., Any], analytics_settings: AnalyticsSettings, minter: TokenMinter
) -> AsyncIterator[FastAPI]:
    app = create_app(analytics_settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture
async def analytics(analytics_app: FastAPI, minter: TokenMinter) -> AsyncIterator[Analytics]:
    transport = httpx.ASGITransport(app=analytics_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Analytics(analytics_app, client, minter)


@pytest.fixture
def history() -> History:
    return History(fresh_day())
