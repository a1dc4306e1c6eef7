"""Charges over real HTTP: the billing app served by uvicorn on a free port, and a streaming replica
that reaches it the way production does (``AiohttpPoster``), not over ASGI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from services.streaming.peers import AiohttpPoster, BillingUnreachable
from streamify.embedded import free_port
from tests.conftest import migrated_database
from tests.streaming.conftest import PRICE, Player, running_streaming_app, streaming_settings


@pytest.fixture(scope="module")
async def billing_url(billing_app: FastAPI) -> AsyncIterator[str]:
    """The (already running) billing app, also served over TCP."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(billing_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        await asyncio.sleep(0.025)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def streaming_over_http(
    asgi_client: Callable[..., Any],
    redis_url: str,
    storage_dir: Path,
    minter: Any,
    clock: Any,
    catalog_app: FastAPI,
    billing_url: str,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = streaming_settings(
        await migrated_database("streaming"), redis_url, storage_dir, billing_url=billing_url
    )
    async with running_streaming_app(
        asgi_client, settings, minter=minter, clock=clock, catalog_app=catalog_app, billing_app=None
    ) as (_, client):
        yield client


class TestChargesOverHttp:
    async def test_units_are_charged_and_refused_exactly_as_over_asgi(
        self, player: Player, streaming_over_http: httpx.AsyncClient
    ):
        viewer = player.user()
        await player.top_up(viewer, 3 * PRICE)
        started = await player.start(viewer, await player.video(), client=streaming_over_http)
        assert started.status_code == 201, started.text
        sid = started.json()["session_id"]

        replies = []
        for second in (1.0, 2.0, 3.0):
            player.clock.advance(1)
            reply = await player.beat(viewer, sid, second, client=streaming_over_http)
            assert reply.status_code == 200, reply.text
            replies.append(reply.json())

        assert [(r["status"], r["billed_minutes"], r["balance"]) for r in replies] == [
            ("active", 2, PRICE),
            ("active", 3, 0),
            ("payment_required", 3, 0),
        ]
        assert await player.charged_units(viewer, sid) == [0, 1, 2]

    async def test_an_empty_wallet_gets_402_over_http_too(
        self, player: Player, streaming_over_http: httpx.AsyncClient
    ):
        response = await player.start(player.user(), await player.video(), client=streaming_over_http)

        assert response.status_code == 402
        assert response.json()["code"] == "insufficient_funds" and response.json()["balance"] == 0


class TestThePoster:
    async def test_it_hands_back_billings_answers_unchanged(self, billing_url: str, player: Player):
        secret = player.billing_app.state.settings.internal_secret
        poster = AiohttpPoster(
            billing_url, service="streaming", secret=secret, timeout_s=2, attempts=2, max_connections=4
        )
        try:
            status, body = await poster.post("/internal/charges", {"key": "x"}, key="x")
        finally:
            await poster.aclose()

        assert status == 422 and json.loads(body)["code"] == "validation_error"

    async def test_a_peer_that_is_not_there_is_unreachable_after_its_attempts(self):
        poster = AiohttpPoster(
            f"http://127.0.0.1:{free_port()}",
            service="streaming",
            secret="s" * 40,
            timeout_s=1,
            attempts=2,
            max_connections=4,
        )
        try:
            with pytest.raises(BillingUnreachable):
                await poster.post("/internal/charges", {}, key="k")
        finally:
            await poster.aclose()

    async def test_a_wrong_service_credential_is_an_answer_not_an_outage(self, billing_url: str):
        poster = AiohttpPoster(
            billing_url, service="streaming", secret="t" * 40, timeout_s=2, attempts=1, max_connections=4
        )
        try:
            status, _ = await poster.post("/internal/charges", {}, key="k")
        finally:
            await poster.aclose()

        assert status == 401
