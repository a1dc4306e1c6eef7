"""Per-route-class body limits: 413 problem+json, before the upstream sees the request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from gateway.settings import MIB, GatewaySettings
from tests.gateway.conftest import ServerProcess, echo_count, open_gateway, raw_request


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"x" * part


class TestDeclaredLength:
    async def test_a_body_over_the_default_limit_is_refused_before_it_is_read(
        self, gateway: httpx.AsyncClient, echoes: dict[str, ServerProcess]
    ) -> None:
        before = echo_count(echoes["catalog"])
        response = await gateway.post("/api/v1/videos", content=b"x" * (MIB + 1))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "payload_too_large"
        assert echo_count(echoes["catalog"]) == before

    def test_the_server_answers_413_without_waiting_for_the_body(
        self, gateway_process: ServerProcess
    ) -> None:
        # Only the head is sent: a 413 that waited for 5 GiB would never come.
        head = b"POST /api/v1/videos HTTP/1.1\r\nHost: gw\r\nContent-Length: 5368709120\r\n\r\n"
        status, answer = raw_request(gateway_process.port, head, timeout_s=5)
        assert status == 413
        assert b"connection: close" in answer.lower()

    async def test_a_body_at_the_limit_passes(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.post("/api/v1/videos", content=b"x" * MIB)
        assert response.status_code == 200
        assert response.json()["received"] == MIB


class TestStreamedBodies:
    async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(
        self, gateway: httpx.AsyncClient, echoes: dict[str, ServerProcess]
    ) -> None:
        before = echo_count(echoes["billing"])
        response = await gateway.post("/api/v1/wallet/topups", content=chunks(3 * MIB))
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert echo_count(echoes["billing"]) == before

    async def test_a_small_chunked_body_is_forwarded(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.post("/api/v1/wallet/topups", content=chunks(100_000, 30_000))
        assert response.status_code == 200
        assert response.json()["received"] == 100_000


class TestUploadClass:
    async def test_upload_routes_accept_large_bodies(self, gateway: httpx.AsyncClient) -> None:
        for path in ("/api/v1/uploads/abc", "/api/v1/videos/9/source"):
            response = await gateway.patch(path, content=chunks(8 * MIB, MIB))
            assert response.status_code == 200, path
            assert response.json()["received"] == 8 * MIB

    async def test_an_upstream_that_refuses_a_body_early_is_relayed(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.patch(
            "/api/v1/uploads/abc", params={"op": "early", "status": "409"}, content=chunks(64 * MIB, MIB)
        )
        assert response.status_code == 409
        assert response.json() == {"service": "catalog", "early": True}

    async def test_limits_are_configurable_per_class(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        settings = settings_for(route_classes={"uploads": {"max_body_bytes": 1000}})
        async with open_gateway(settings) as client:
            response = await client.patch("/api/v1/uploads/abc", content=b"x" * 1001)
        assert response.status_code == 413
