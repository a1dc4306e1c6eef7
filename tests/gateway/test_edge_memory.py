"""Requests whose verdict the gateway already knows go on without waiting for Redis (gateway.memory).

They are counted all the same, the limits hold exactly, and a revocation announced by auth
stops a remembered token at the edge at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from common.ratelimit import RateLimiter
from common.tokens import REVOKED_JTI_PREFIX, revoke_access_tokens
from gateway.memory import TokenMemory
from gateway.settings import GatewaySettings
from tests.auth.forge import parts
from tests.gateway.conftest import ServerProcess, Signer, echo_count, open_gateway, random_ip
from tests.gateway.test_edge_auth import upstream_hits

GENEROUS = {"default": {"rate_ip": "100/minute", "rate_user": None}}
TIGHT = {"default": {"rate_ip": "30/minute", "rate_user": None}}
UNLIMITED: dict[str, dict[str, str | None]] = {"default": {"rate_ip": None, "rate_user": None}}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _videos(client: httpx.AsyncClient, token: str) -> int:
    """The status of one ``GET /api/v1/videos`` with ``token``."""
    return (await client.get("/api/v1/videos", headers=_bearer(token))).status_code


class TestLimitsWithMemory:
    async def test_remaining_counts_down_exactly_and_every_request_is_counted(
        self, settings_for: Callable[..., GatewaySettings], redis_url: str
    ) -> None:
        ip = random_ip()
        async with open_gateway(settings_for(route_classes=GENEROUS), client_ip=ip) as client:
            responses = [await client.get("/api/v1/videos") for _ in range(40)]
        assert [r.status_code for r in responses] == [200] * 40
        assert [int(r.headers["ratelimit-remaining"]) for r in responses] == list(range(99, 59, -1))
        assert all(r.headers["ratelimit-limit"] == "100" for r in responses)
        assert all(0 <= int(r.headers["ratelimit-reset"]) <= 60 for r in responses)
        # The requests that did not wait were counted in Redis too (the shared limiter sees 40).
        limiter = RateLimiter(redis_url)
        assert await limiter.remaining("100/minute", "gateway", "default", "ip", ip) == 60

    async def test_the_limit_holds_exactly_once_the_margin_is_used_up(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess]
    ) -> None:
        before = echo_count(echoes["catalog"])
        async with open_gateway(settings_for(route_classes=TIGHT), client_ip=random_ip()) as client:
            statuses = [(await client.get("/api/v1/videos")).status_code for _ in range(36)]
        assert statuses == [200] * 30 + [429] * 6
        assert echo_count(echoes["catalog"]) == before + 30

    async def test_concurrent_requests_never_overshoot_a_limit_on_one_gateway(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess]
    ) -> None:
        before = echo_count(echoes["catalog"])
        async with open_gateway(settings_for(route_classes=TIGHT), client_ip=random_ip()) as client:
            await client.get("/api/v1/videos")  # the first answer: remembered from here on
            responses = await asyncio.gather(*(client.get("/api/v1/videos") for _ in range(60)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 29 + [429] * 31
        assert echo_count(echoes["catalog"]) == before + 30


class TestRevocationWithMemory:
    async def test_a_revocation_announced_by_auth_stops_a_remembered_token_at_the_edge(
        self,
        settings_for: Callable[..., GatewaySettings],
        signer: Signer,
        redis: Redis,
        echoes: dict[str, ServerProcess],
    ) -> None:
        token = signer.token()
        claims = parts(token)[1]
        # Remembered for 10 s: only the announcement can explain a refusal within the test.
        async with open_gateway(settings_for(edge_memory_s=10), signer=signer) as client:
            assert [await _videos(client, token) for _ in range(3)] == [200, 200, 200]
            await revoke_access_tokens(redis, [(claims["jti"], claims["exp"])])
            await asyncio.sleep(0.2)  # the announcement's way from Redis to the gateway
            before = upstream_hits(echoes)
            refused = await client.get("/api/v1/videos", headers=_bearer(token))
            assert upstream_hits(echoes) == before
        assert refused.status_code == 401
        assert refused.json()["code"] == "token_revoked"

    @pytest.mark.parametrize("classes", [None, UNLIMITED], ids=["limited", "unlimited"])
    async def test_a_lost_announcement_is_made_up_for_by_the_next_answer_about_the_token(
        self,
        settings_for: Callable[..., GatewaySettings],
        signer: Signer,
        redis: Redis,
        echoes: dict[str, ServerProcess],
        classes: dict[str, dict[str, str | None]] | None,
    ) -> None:
        token = signer.token()
        overrides: dict[str, Any] = {"edge_memory_s": 10}
        if classes is not None:
            overrides["route_classes"] = classes
        async with open_gateway(settings_for(**overrides), signer=signer) as client:
            for _ in range(3):
                assert await _videos(client, token) == 200
            # Denied without an announcement: the next answer about the token tells the gateway.
            await redis.set(REVOKED_JTI_PREFIX + parts(token)[1]["jti"], "1", ex=600)
            before = upstream_hits(echoes)
            statuses: list[int] = []
            deadline = time.monotonic() + 1.0  # well inside the 10 s the token is remembered for
            while 401 not in statuses and time.monotonic() < deadline:
                statuses.append(await _videos(client, token))
            statuses += [await _videos(client, token) for _ in range(3)]
            forwarded = upstream_hits(echoes) - before
        # Only the requests that arrived before Redis's next answer about it went on (the services
        # refuse those themselves: they check the deny-list on every request); then none.
        first_refusal = statuses.index(401)
        assert first_refusal >= 1  # the remembered token went on without waiting for Redis
        assert statuses[first_refusal:] == [401] * (len(statuses) - first_refusal)
        assert forwarded == first_refusal

    async def test_with_memory_off_every_request_waits_for_the_deny_list(
        self,
        settings_for: Callable[..., GatewaySettings],
        signer: Signer,
        redis: Redis,
        echoes: dict[str, ServerProcess],
    ) -> None:
        token = signer.token()
        async with open_gateway(settings_for(edge_memory_s=0), signer=signer) as client:
            assert await _videos(client, token) == 200
            await redis.set(REVOKED_JTI_PREFIX + parts(token)[1]["jti"], "1", ex=600)
            before = upstream_hits(echoes)
            refused = await client.get("/api/v1/videos", headers=_bearer(token))
            assert upstream_hits(echoes) == before
        assert refused.status_code == 401


class TestTokenMemory:
    async def test_an_announcement_makes_it_forget_a_token_it_found_good(self, redis: Redis) -> None:
        memory = TokenMemory(redis, fresh_s=30)
        memory.start()
        try:
            await _until(lambda: memory.listening)
            now = time.monotonic()
            memory.learn("jti-1", False, now)
            memory.learn("jti-2", False, now)
            assert memory.good("jti-1", now) and memory.good("jti-2", now)
            await revoke_access_tokens(redis, [("jti-1", int(time.time()) + 60)])
            await _until(lambda: not memory.good("jti-1", time.monotonic()))
            assert memory.good("jti-2", time.monotonic())
            # A "not revoked" answer computed before the revocation and heard after it is ignored.
            memory.learn("jti-1", False, time.monotonic())
            assert not memory.good("jti-1", time.monotonic())
        finally:
            await memory.close()

    async def test_nothing_is_remembered_while_not_subscribed(self, redis: Redis) -> None:
        memory = TokenMemory(redis, fresh_s=30)  # never started: not following the announcements
        memory.learn("jti-1", False, time.monotonic())
        assert not memory.good("jti-1", time.monotonic())

    @pytest.mark.parametrize("unreachable", ["redis://127.0.0.1:9/0"])
    async def test_it_stops_cleanly_while_redis_is_unreachable(self, unreachable: str) -> None:
        client = Redis.from_url(unreachable, socket_connect_timeout=0.2)
        memory = TokenMemory(client)
        memory.start()
        await asyncio.sleep(0.5)
        assert not memory.listening
        started = time.monotonic()
        await memory.close()
        assert time.monotonic() - started < 2
        await client.aclose()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
