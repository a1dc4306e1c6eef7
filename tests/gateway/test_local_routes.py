"""The gateway's own routes: health, readiness over the upstreams, metrics, combined OpenAPI, SPA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.settings import GatewaySettings
from tests.gateway.conftest import ServerProcess, open_gateway, start_echo, unused_url


class TestHealth:
    async def test_healthz_answers_without_asking_anyone(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        down = {name: [unused_url()] for name in ("auth", "catalog", "streaming", "billing", "analytics")}
        async with open_gateway(settings_for(upstreams=down)) as client:
            response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_is_200_when_every_upstream_has_a_ready_instance(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/readyz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ready"
        assert set(body["upstreams"]) == {"auth", "catalog", "streaming", "billing", "analytics"}
        assert all(entry["ready"] for entry in body["upstreams"].values())
        assert body["redis"] == "ready"

    async def test_one_ready_instance_is_enough(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess]
    ) -> None:
        settings = settings_for(upstreams={"auth": [unused_url(), echoes["auth"].url]})
        async with open_gateway(settings) as client:
            response = await client.get("/readyz")
        assert response.status_code == 200
        instances = response.json()["upstreams"]["auth"]["instances"]
        assert sorted(v.split(":")[0] for v in instances.values()) == ["ready", "unreachable"]

    async def test_readyz_is_503_naming_the_upstream_that_is_not_ready(
        self, settings_for: Callable[..., GatewaySettings], log_dir: Path
    ) -> None:
        not_ready = start_echo("billing-starting", log_dir, UPSTREAM_NOT_READY="1")
        try:
            not_ready.wait_ready("/healthz")
            settings = settings_for(upstreams={"billing": [not_ready.url], "analytics": [unused_url()]})
            async with open_gateway(settings) as client:
                response = await client.get("/readyz")
        finally:
            not_ready.stop()
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["upstreams"]["billing"]["ready"] is False
        assert list(body["upstreams"]["billing"]["instances"].values()) == ["not_ready: 503"]
        assert body["upstreams"]["analytics"]["ready"] is False
        assert body["upstreams"]["catalog"]["ready"] is True


class TestMetrics:
    async def test_red_metrics_by_route_and_upstream_metrics(self, gateway: httpx.AsyncClient) -> None:
        await gateway.get("/api/v1/videos/123")
        await gateway.get("/api/v1/nothing-here")
        text = (await gateway.get("/metrics")).text
        assert 'http_requests_total{method="GET",route="/api/v1/videos",status="200"}' in text
        assert 'http_requests_total{method="GET",route="<unmatched>",status="404"}' in text
        assert "/api/v1/videos/123" not in text  # never the raw path
        assert 'gateway_upstream_requests_total{outcome="200",upstream="catalog"}' in text
        assert 'gateway_upstream_response_seconds_bucket{le="0.005",upstream="catalog"}' in text
        assert 'gateway_circuit_breaker_state{upstream="catalog"}' in text
        assert 'route="/healthz"' not in text


class TestCombinedOpenAPI:
    async def test_every_services_paths_appear_under_the_public_prefix(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/api/openapi.json")
        assert response.status_code == 200
        document = response.json()
        paths = set(document["paths"])
        for service in ("catalog", "streaming", "billing", "analytics"):
            # The echo documents /<name>-things/{id}; only prefixes the route table sends to that
            # service are public, so these stay out, as do /internal and health paths.
            assert f"/api/v1/{service}-things/{{thing_id}}" not in paths
        assert not any("internal" in path or path.endswith("/healthz") for path in paths)
        assert document["info"]["title"] == "Streamify API"
        assert "bearer" in document["components"]["securitySchemes"]

    async def test_routed_paths_are_published_with_the_prefix(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        routes = {f"/api/v1/{name}-things": name for name in ("auth", "catalog", "billing")}
        async with open_gateway(settings_for(routes=routes)) as client:
            document = (await client.get("/api/openapi.json")).json()
        for name in ("auth", "catalog", "billing"):
            operation = document["paths"][f"/api/v1/{name}-things/{{thing_id}}"]["get"]
            assert operation["tags"] == [name]
            assert operation["operationId"] == f"{name}_get_thing"
        # Every service names its schema "Echo", each with another shape: the first (by name) keeps
        # the name, the others are qualified and their references follow.
        schemas = document["components"]["schemas"]
        assert {"Echo", "auth_Echo", "billing_Echo", "catalog_Echo", "streaming_Echo"} == set(schemas)
        assert schemas["billing_Echo"]["properties"]["service"]["const"] == "billing"
        ok = document["paths"]["/api/v1/billing-things/{thing_id}"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/billing_Echo"

    async def test_the_docs_page_is_swagger_ui_over_the_combined_document(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/api/docs")
        assert response.status_code == 200
        assert "swagger-ui" in response.text
        assert "/api/openapi.json" in response.text


class TestStaticFiles:
    async def test_the_placeholder_page_is_served_at_the_root(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/")
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]
        assert "Streamify" in response.text

    async def test_client_side_routes_fall_back_to_the_app(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/watch/abc")
        assert response.status_code == 200
        assert "Streamify" in response.text

    async def test_unknown_api_and_asset_paths_are_404_problems(self, gateway: httpx.AsyncClient) -> None:
        for path in ("/api/unknown", "/assets/missing.js"):
            response = await gateway.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"

    async def test_a_built_spa_is_served_when_configured(
        self, settings_for: Callable[..., GatewaySettings], tmp_path: Path
    ) -> None:
        (tmp_path / "index.html").write_text("<!doctype html><title>Built SPA</title>")
        (tmp_path / "app.js").write_text("console.log(1)")
        async with open_gateway(settings_for(static_dir=str(tmp_path))) as client:
            assert "Built SPA" in (await client.get("/")).text
            assert (await client.get("/app.js")).text == "console.log(1)"
            assert "Built SPA" in (await client.get("/library")).text

    async def test_hashed_assets_are_cached_for_good_and_the_page_never_stale(
        self, settings_for: Callable[..., GatewaySettings], tmp_path: Path
    ) -> None:
        (tmp_path / "index.html").write_text("<!doctype html><title>Built SPA</title>")
        (tmp_path / "assets").mkdir()
        (tmp_path / "assets" / "index-3f2a1b.js").write_text("console.log(1)")
        async with open_gateway(settings_for(static_dir=str(tmp_path))) as client:
            for path in ("/", "/index.html", "/studio/videos/1"):
                assert (await client.get(path)).headers["cache-control"] == "no-cache", path
            asset = await client.get("/assets/index-3f2a1b.js")
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
