"""The auth service's outer shape: the routes SPEC section 3 names, documented, and its health endpoints."""

from __future__ import annotations

import httpx

SPEC_ROUTES = {
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/users/me"),
    ("patch", "/users/me"),
    ("post", "/users/me/channel"),
    ("get", "/channels/{channel_id}"),
    ("put", "/channels/{channel_id}/subscription"),
    ("delete", "/channels/{channel_id}/subscription"),
    ("get", "/users/me/subscriptions"),
}


class TestServiceShape:
    async def test_every_route_of_the_spec_is_served_without_the_api_prefix_and_documented(
        self, auth_client: httpx.AsyncClient
    ):
        spec = (await auth_client.get("/openapi.json")).json()
        for method, path in SPEC_ROUTES:
            operation = spec["paths"][path][method]
            assert operation["description"].strip(), (method, path)
        assert not any(path.startswith("/api/v1") for path in spec["paths"])

    async def test_health_and_readiness_answer(self, auth_client: httpx.AsyncClient):
        assert (await auth_client.get("/healthz")).status_code == 200
        ready = await auth_client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert (await auth_client.get("/metrics")).status_code == 200
