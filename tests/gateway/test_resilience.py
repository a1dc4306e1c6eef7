"""Failing upstreams: unreachable -> 502 fast, slow -> 504 within the deadline, circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from gateway.settings import GatewaySettings
from tests.gateway.conftest import ServerProcess, echo_count, open_gateway, unused_url


def breaker_state(metrics: str, upstream: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'gateway_circuit_breaker_state{{upstream="{upstream}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no breaker gauge for {upstream}")


class TestUnreachableUpstream:
    async def test_a_down_upstream_is_a_fast_502_problem(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        async with open_gateway(settings_for(upstreams={"billing": [unused_url()]})) as client:
            started = time.perf_counter()
            response = await client.get("/api/v1/wallet")
            elapsed = time.perf_counter() - started
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "upstream_unreachable"
        assert elapsed < 1.0

    async def test_other_upstreams_keep_working(self, settings_for: Callable[..., GatewaySettings]) -> None:
        async with open_gateway(settings_for(upstreams={"billing": [unused_url()]})) as client:
            assert (await client.get("/api/v1/wallet")).status_code == 502
            assert (await client.get("/api/v1/videos")).status_code == 200


class TestSlowUpstream:
    async def test_no_answer_within_the_deadline_is_a_504_problem(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        settings = settings_for(route_classes={"default": {"timeout_s": 0.5}})
        async with open_gateway(settings) as client:
            started = time.perf_counter()
            response = await client.get("/api/v1/videos", params={"op": "slow", "s": "5"})
            elapsed = time.perf_counter() - started
        assert response.status_code == 504
        assert response.json()["code"] == "upstream_timeout"
        assert 0.5 <= elapsed < 1.5

    async def test_upload_routes_may_take_longer(self, settings_for: Callable[..., GatewaySettings]) -> None:
        settings = settings_for(route_classes={"default": {"timeout_s": 0.3}, "uploads": {"timeout_s": 5}})
        async with open_gateway(settings) as client:
            response = await client.put(
                "/api/v1/videos/7/source", params={"op": "slow", "s": "0.6"}, content=b"x"
            )
        assert response.status_code == 200


class TestCircuitBreaker:
    async def test_it_opens_after_consecutive_failures_and_then_answers_503_at_once(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess]
    ) -> None:
        settings = settings_for(
            route_classes={"default": {"timeout_s": 0.3}}, breaker_failure_threshold=3, breaker_reset_s=30
        )
        async with open_gateway(settings) as client:
            slow = [await client.get("/api/v1/playback/x", params={"op": "slow", "s": "2"}) for _ in range(3)]
            before = echo_count(echoes["streaming"])
            started = time.perf_counter()
            refused = await client.get("/api/v1/playback/x")
            elapsed = time.perf_counter() - started
            metrics = (await client.get("/metrics")).text
        assert [r.status_code for r in slow] == [504, 504, 504]
        assert refused.status_code == 503
        assert refused.json()["code"] == "upstream_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        assert elapsed < 0.1
        assert echo_count(echoes["streaming"]) == before  # the upstream was spared
        assert breaker_state(metrics, "streaming") == 2.0

    async def test_it_half_opens_after_the_cool_down_and_closes_on_success(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        settings = settings_for(
            route_classes={"default": {"timeout_s": 0.3}}, breaker_failure_threshold=2, breaker_reset_s=0.5
        )
        async with open_gateway(settings) as client:
            for _ in range(2):
                await client.get("/api/v1/analytics/x", params={"op": "slow", "s": "2"})
            assert (await client.get("/api/v1/analytics/x")).status_code == 503
            await asyncio.sleep(0.6)
            probe = await client.get("/api/v1/analytics/x")  # half-open: this one goes through
            after = [await client.get("/api/v1/analytics/x") for _ in range(3)]
            metrics = (await client.get("/metrics")).text
        assert probe.status_code == 200
        assert [r.status_code for r in after] == [200, 200, 200]
        assert breaker_state(metrics, "analytics") == 0.0

    async def test_a_failed_probe_opens_it_again(self, settings_for: Callable[..., GatewaySettings]) -> None:
        settings = settings_for(
            route_classes={"default": {"timeout_s": 0.3}}, breaker_failure_threshold=2, breaker_reset_s=0.5
        )
        async with open_gateway(settings) as client:
            for _ in range(2):
                await client.get("/api/v1/creator/x", params={"op": "slow", "s": "2"})
            await asyncio.sleep(0.6)
            probe = await client.get("/api/v1/creator/x", params={"op": "slow", "s": "2"})
            right_after = await client.get("/api/v1/creator/x")
        assert probe.status_code == 504
        assert right_after.status_code == 503

    async def test_an_unreachable_upstream_opens_it_too(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        settings = settings_for(upstreams={"billing": [unused_url()]}, breaker_failure_threshold=2)
        async with open_gateway(settings) as client:
            statuses = [(await client.get("/api/v1/wallet")).status_code for _ in range(4)]
        assert statuses == [502, 502, 503, 503]


class TestUpstreamStatusesPassThrough:
    async def test_an_upstream_error_answer_is_relayed_not_rewritten(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/api/v1/videos/x", params={"status": "503"})
        assert response.status_code == 503
        assert response.json()["service"] == "catalog"
