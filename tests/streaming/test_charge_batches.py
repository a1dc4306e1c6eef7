"""Group commit from streaming's side: units that come due together reach the real billing app as
a few ``/internal/charges/batch`` calls, each unit charged exactly once; against a billing without
the batch route, one call per unit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from common.internal import SERVICE_TOKEN_HEADER, ServiceClient, mint_service_token
from services.streaming.live import ChargeOutcome
from services.streaming.peers import BillingClient, ServiceClientPoster, UnitCharge
from tests.identities import TokenMinter


class CountingPoster:
    """The real poster to the real billing app, recording which route each call took (and sending
    the batch route's calls to ``batch_path``, a route billing may not have)."""

    def __init__(self, billing_app: FastAPI, batch_path: str = "/internal/charges/batch") -> None:
        settings = billing_app.state.settings
        self.inner = ServiceClientPoster(
            ServiceClient(
                "http://billing",
                service="streaming",
                secret=settings.internal_secret,
                transport=httpx.ASGITransport(app=billing_app),
            )
        )
        self.batch_path = batch_path
        self.paths: list[str] = []

    async def post(self, path: str, body: dict[str, Any], *, key: str | None) -> tuple[int, bytes]:
        self.paths.append(path)
        if path == "/internal/charges/batch":
            path = self.batch_path
        return await self.inner.post(path, body, key=key)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def funded_viewer(billing_app: FastAPI, minter: TokenMinter, amount: int) -> uuid.UUID:
    viewer = uuid.uuid4()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=billing_app), base_url="http://b") as http:
        response = await http.post(
            "/wallet/topups",
            json={"amount": amount, "payment_method": "test_card"},
            headers={
                "Authorization": f"Bearer {minter.token(viewer, 'viewer')}",
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )
        assert response.status_code == 201, response.text
    return viewer


async def balance(billing_app: FastAPI, viewer: uuid.UUID) -> int:
    secret = billing_app.state.settings.internal_secret
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=billing_app), base_url="http://b") as http:
        response = await http.get(
            f"/internal/wallets/{viewer}", headers={SERVICE_TOKEN_HEADER: mint_service_token(secret, "test")}
        )
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


async def charges_of(billing_app: FastAPI, sessions: list[uuid.UUID]) -> dict[str, int]:
    rows = await billing_app.state.billing.ledger.fetch(
        "SELECT key, count(*) AS n FROM transactions WHERE session_id = ANY($1) GROUP BY key", sessions
    )
    return {row["key"]: row["n"] for row in rows}


def units(viewer: uuid.UUID, sessions: list[uuid.UUID], per_session: int) -> list[UnitCharge]:
    creator, video = uuid.uuid4(), uuid.uuid4()
    return [
        UnitCharge(session, unit, viewer, creator, video, amount=10, currency="USD")
        for session in sessions
        for unit in range(per_session)
    ]


class TestUnitsDueTogether:
    async def test_go_to_billing_in_a_few_calls_and_each_is_charged_once(
        self, billing_app: FastAPI, minter: TokenMinter
    ):
        viewer = await funded_viewer(billing_app, minter, 300)
        sessions = [uuid.uuid4(), uuid.uuid4()]
        poster = CountingPoster(billing_app)
        client = BillingClient(poster)

        results = await asyncio.gather(*(client.charge_unit(c) for c in units(viewer, sessions, 20)))
        await client.aclose()

        outcomes = [result.outcome for result in results]
        assert outcomes.count(ChargeOutcome.charged) == 30
        assert outcomes.count(ChargeOutcome.insufficient) == 10
        assert await balance(billing_app, viewer) == 0
        charged = await charges_of(billing_app, sessions)
        assert len(charged) == 30 and set(charged.values()) == {1}
        # 40 units, at most 50 a batch, two calls in flight: the first goes alone, the rest together.
        assert len(poster.paths) <= 3, poster.paths
        assert "/internal/charges/batch" in poster.paths

    async def test_a_billing_without_the_batch_route_gets_one_call_per_unit(
        self, billing_app: FastAPI, minter: TokenMinter
    ):
        viewer = await funded_viewer(billing_app, minter, 1000)
        sessions = [uuid.uuid4()]
        poster = CountingPoster(billing_app, batch_path="/internal/charges/no-such-route")
        client = BillingClient(poster)

        first = await asyncio.gather(*(client.charge_unit(c) for c in units(viewer, sessions, 10)))
        calls_before = len(poster.paths)
        later = await asyncio.gather(*(client.charge_unit(c) for c in units(viewer, [uuid.uuid4()], 5)))
        await client.aclose()

        assert all(result.outcome is ChargeOutcome.charged for result in [*first, *later])
        assert await balance(billing_app, viewer) == 1000 - 15 * 10
        assert set(poster.paths[calls_before:]) == {"/internal/charges"}  # it remembered
        assert set((await charges_of(billing_app, sessions)).values()) == {1}
