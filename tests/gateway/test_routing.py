"""Routing: every public prefix reaches its upstream with the public prefix stripped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.settings import GatewaySettings
from streamify.embedded import free_port
from tests.gateway.conftest import ServerProcess, Signer, echo_count, open_gateway, start_echo, unused_url

# (public path, upstream, path the upstream sees) — SPEC §3.
ROUTES = [
    ("/api/v1/auth/login", "auth", "/auth/login"),
    ("/api/v1/users/me", "auth", "/users/me"),
    ("/api/v1/users/me/subscriptions", "auth", "/users/me/subscriptions"),
    ("/api/v1/channels/42/subscription", "auth", "/channels/42/subscription"),
    ("/api/v1/videos", "catalog", "/videos"),
    ("/api/v1/videos/7/comments", "catalog", "/videos/7/comments"),
    ("/api/v1/uploads/abc", "catalog", "/uploads/abc"),
    ("/api/v1/search", "catalog", "/search"),
    ("/api/v1/playback/sessions", "streaming", "/playback/sessions"),
    ("/api/v1/users/me/history", "streaming", "/users/me/history"),
    ("/api/v1/wallet/topups", "billing", "/wallet/topups"),
    ("/api/v1/creator/earnings", "billing", "/creator/earnings"),
    ("/api/v1/analytics/creator/overview", "analytics", "/analytics/creator/overview"),
]


class TestRouteTable:
    @pytest.mark.parametrize(("public", "upstream", "forwarded"), ROUTES)
    async def test_each_prefix_reaches_its_service_with_the_prefix_stripped(
        self, gateway: httpx.AsyncClient, public: str, upstream: str, forwarded: str
    ) -> None:
        response = await gateway.get(public)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["service"] in (upstream, f"{upstream}2")
        assert body["path"] == forwarded

    async def test_jwks_is_proxied_to_auth_without_stripping(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/.well-known/jwks.json", params={"probe": "1"})
        assert response.status_code == 200
        body = response.json()
        assert body["service"] in ("auth", "auth2")
        assert body["path"] == "/.well-known/jwks.json"

    async def test_query_string_and_method_and_body_are_forwarded(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.post("/api/v1/videos?q=cats&sort=new", json={"title": "x"})
        body = response.json()
        assert body["method"] == "POST"
        assert body["query"] == "q=cats&sort=new"
        assert body["received"] == len(b'{"title":"x"}')

    async def test_encoded_characters_reach_the_upstream_as_sent(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/search/a%20b%2Bc")
        assert response.json()["path"] == "/search/a b+c"

    async def test_prefixes_match_whole_segments_only(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/videosx")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"

    @pytest.mark.parametrize(
        "path", ["/api/v1/", "/api/v1/nothing-here", "/api/v2/videos", "/.well-known/other"]
    )
    async def test_unknown_paths_are_404_problems(self, gateway: httpx.AsyncClient, path: str) -> None:
        response = await gateway.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"

    async def test_the_route_table_is_configurable(
        self, settings_for: Callable[..., GatewaySettings], signer: Signer
    ) -> None:
        settings = settings_for(routes={"/api/v1/reports": "analytics", "/api/v1/search": None})
        async with open_gateway(settings, signer=signer) as client:
            moved = await client.get("/api/v1/reports/daily")
            removed = await client.get("/api/v1/search")
        assert moved.json()["service"] == "analytics"
        assert moved.json()["path"] == "/reports/daily"
        assert removed.status_code == 404


class TestInstances:
    async def test_requests_are_spread_round_robin_over_instances(self, gateway: httpx.AsyncClient) -> None:
        served: Counter[str] = Counter()
        for _ in range(10):
            served[(await gateway.get("/api/v1/users/me")).json()["service"]] += 1
        assert served == {"auth": 5, "auth2": 5}

    async def test_a_dead_instance_is_taken_out_and_the_live_one_serves_everything(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess], signer: Signer
    ) -> None:
        settings = settings_for(upstreams={"catalog": [unused_url(), echoes["catalog"].url]}, eject_s=30)
        before = echo_count(echoes["catalog"])
        async with open_gateway(settings, signer=signer) as client:
            statuses = [(await client.get("/api/v1/videos")).status_code for _ in range(6)]
            metrics = (await client.get("/metrics")).text
        assert statuses == [200] * 6
        assert echo_count(echoes["catalog"]) - before == 6
        dead = [line for line in metrics.splitlines() if line.startswith("gateway_upstream_instance_up{")]
        assert any('upstream="catalog"' in line and line.endswith(" 0.0") for line in dead)

    async def test_an_ejected_instance_is_tried_again_after_the_ejection_period(
        self,
        settings_for: Callable[..., GatewaySettings],
        echoes: dict[str, ServerProcess],
        signer: Signer,
        log_dir: Path,
    ) -> None:
        port = free_port()
        settings = settings_for(
            upstreams={"catalog": [f"http://127.0.0.1:{port}", echoes["catalog"].url]}, eject_s=0.5
        )
        async with open_gateway(settings, signer=signer) as client:
            assert (await client.get("/api/v1/videos")).status_code == 200  # and the dead one is ejected
            revived = start_echo("revived", log_dir, port=port)
            try:
                revived.wait_ready("/readyz")
                await asyncio.sleep(0.6)
                served: Counter[str] = Counter()
                for _ in range(6):
                    served[(await client.get("/api/v1/videos")).json()["service"]] += 1
            finally:
                revived.stop()
        assert served == {"revived": 3, "catalog": 3}


class TestConnections:
    async def test_head_requests_get_the_headers_without_a_body(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.head("/api/v1/videos/1")
        assert response.status_code == 200
        assert int(response.headers["content-length"]) > 0
        assert response.content == b""
        # The connection pool is still usable afterwards.
        assert (await gateway.get("/api/v1/videos/1")).json()["path"] == "/videos/1"

    @pytest.mark.slow
    async def test_keep_alive_connections_the_upstream_closed_are_not_reused(
        self, settings_for: Callable[..., GatewaySettings], signer: Signer
    ) -> None:
        # The echo upstreams (uvicorn) close idle connections after 5 s; keep ours longer.
        async with open_gateway(settings_for(upstream_keepalive_s=60), signer=signer) as client:
            assert (await client.get("/api/v1/wallet")).status_code == 200
            await asyncio.sleep(5.5)
            statuses = [(await client.get("/api/v1/wallet")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
