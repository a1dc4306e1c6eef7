"""What the gateway adds and removes: identity and forwarding headers, request id, security
headers, CORS."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from common import tracing
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ServerProcess, Signer, open_gateway

SPOOFED = {
    "X-User-Id": "admin",
    "X-User-Role": "admin",
    "X-Authenticated-User": "admin",
    "X-Authenticated-Userid": "admin",
    "X-Streamify-User-Id": "admin",
    "X-Streamify-User-Role": "admin",
    "X-Service-Token": "forged",
    "X-Forwarded-For": "1.2.3.4",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Real-IP": "1.2.3.4",
    "Forwarded": "for=1.2.3.4",
}


def received(response: httpx.Response) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


class TestIdentityHeaders:
    async def test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream(
        self, settings_for: Callable[..., GatewaySettings], signer: Signer
    ) -> None:
        async with open_gateway(settings_for(), signer=signer, client_ip="10.9.8.7") as client:
            response = await client.get("/api/v1/wallet", headers=SPOOFED)
        headers = received(response)
        assert "admin" not in str(headers)
        assert "x-user-id" not in headers and "x-user-role" not in headers
        assert "x-streamify-user-id" not in headers and "x-streamify-user-role" not in headers
        assert "x-service-token" not in headers and "x-real-ip" not in headers and "forwarded" not in headers
        assert not any(name.startswith("x-authenticated-") for name in headers)
        # The gateway's own forwarding headers: the peer address, the scheme it was reached on.
        assert headers["x-forwarded-for"] == ["10.9.8.7"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert headers["x-forwarded-host"] == ["gateway.test"]

    async def test_spoofed_identity_is_replaced_by_the_verified_one(
        self, gateway: httpx.AsyncClient, signer: Signer
    ) -> None:
        token = signer.token(sub="real-user", role="viewer")
        response = await gateway.get(
            "/api/v1/wallet", headers={**SPOOFED, "Authorization": f"Bearer {token}"}
        )
        headers = received(response)
        assert headers["x-streamify-user-id"] == ["real-user"]
        assert headers["x-streamify-user-role"] == ["viewer"]

    async def test_hop_by_hop_headers_named_in_connection_are_dropped(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get(
            "/api/v1/wallet", headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1"}
        )
        assert "x-secret" not in received(response)


class TestRequestId:
    async def test_a_request_id_is_generated_and_sent_to_the_upstream_and_back(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/api/v1/videos")
        request_id = response.headers["x-request-id"]
        assert len(request_id) >= 16
        assert received(response)["x-request-id"] == [request_id]

    async def test_a_client_request_id_is_propagated(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/videos", headers={"X-Request-ID": "client-abc-123"})
        assert response.headers["x-request-id"] == "client-abc-123"
        assert received(response)["x-request-id"] == ["client-abc-123"]

    async def test_a_request_id_that_is_not_an_id_is_replaced(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/videos", headers={"X-Request-ID": 'x" injected'})
        assert response.headers["x-request-id"] != 'x" injected'
        assert received(response)["x-request-id"] == [response.headers["x-request-id"]]

    async def test_the_request_id_reaches_the_upstream_logs(
        self, gateway: httpx.AsyncClient, echoes: dict[str, ServerProcess]
    ) -> None:
        response = await gateway.get("/api/v1/analytics/me", headers={"X-Request-ID": "trace-me-42"})
        assert response.status_code == 200
        lines = [line for line in echoes["analytics"].log_lines() if line.get("request_id") == "trace-me-42"]
        assert lines and lines[-1]["event"] == "echo"

    def test_the_request_id_is_on_the_gateways_own_log_lines(
        self, gateway_process: ServerProcess, echoes: dict[str, ServerProcess]
    ) -> None:
        import time
        import urllib.request

        request = urllib.request.Request(
            f"{gateway_process.url}/api/v1/billing-check", headers={"X-Request-ID": "gw-log-77"}
        )
        with pytest.raises(urllib.error.HTTPError):  # no such route: a 404 problem
            urllib.request.urlopen(request, timeout=5)
        request = urllib.request.Request(
            f"{gateway_process.url}/api/v1/wallet", headers={"X-Request-ID": "gw-log-78"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # access lines are written in batches
            lines = [line for line in gateway_process.log_lines() if line.get("request_id") == "gw-log-78"]
            if lines:
                break
            time.sleep(0.1)
        assert lines[0]["event"] == "proxied"
        assert lines[0]["upstream"] == "billing" and lines[0]["status"] == 200
        assert any(line.get("request_id") == "gw-log-78" for line in echoes["billing"].log_lines())


class TestTraceContext:
    TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def test_the_upstream_continues_the_clients_trace_below_the_gateways_span(
        self, gateway: httpx.AsyncClient, echoes: dict[str, ServerProcess]
    ) -> None:
        response = await gateway.get(
            "/api/v1/analytics/me", headers={"traceparent": self.TRACEPARENT, "X-Request-ID": "traced-1"}
        )
        forwarded = received(response)["traceparent"]
        assert len(forwarded) == 1
        trace_id, parent, flags = tracing.parse_traceparent(forwarded[0]) or ("", "", "")
        assert trace_id == "0af7651916cd43dd8448eb211c80319c" and flags == "01"
        assert parent != "b7ad6b7169203331"  # the gateway's own span, not the client's
        # The service's log line of that request carries the trace and the request id.
        lines = [line for line in echoes["analytics"].log_lines() if line.get("request_id") == "traced-1"]
        assert lines and lines[-1]["trace_id"] == trace_id and lines[-1]["span_id"] != parent

    async def test_without_a_valid_traceparent_the_gateway_starts_a_trace(
        self, gateway: httpx.AsyncClient
    ) -> None:
        for sent in ({}, {"traceparent": "00-zz-not-a-trace"}):
            forwarded = received(await gateway.get("/api/v1/videos", headers=sent))["traceparent"]
            assert len(forwarded) == 1 and tracing.parse_traceparent(forwarded[0]) is not None
            assert "zz" not in forwarded[0]

    def test_the_gateways_access_lines_carry_the_trace_id(self, gateway_process: ServerProcess) -> None:
        import time
        import urllib.request

        request = urllib.request.Request(
            f"{gateway_process.url}/api/v1/wallet",
            headers={"X-Request-ID": "gw-trace-1", "traceparent": self.TRACEPARENT},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 3
        lines: list[dict[str, object]] = []
        while not lines and time.monotonic() < deadline:  # access lines are written in batches
            lines = [line for line in gateway_process.log_lines() if line.get("request_id") == "gw-trace-1"]
            time.sleep(0.1)
        assert lines and lines[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


class TestSecurityHeaders:
    @pytest.mark.parametrize("path", ["/api/v1/videos", "/api/v1/nothing", "/", "/healthz", "/api/docs"])
    async def test_every_answer_carries_the_security_headers(
        self, gateway: httpx.AsyncClient, path: str
    ) -> None:
        response = await gateway.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # plain http

    async def test_api_answers_forbid_everything_and_the_spa_gets_its_own_policy(
        self, gateway: httpx.AsyncClient
    ) -> None:
        api = await gateway.get("/api/v1/videos")
        page = await gateway.get("/")
        assert api.headers["content-security-policy"].startswith("default-src 'none'")
        assert "script-src 'self'" in page.headers["content-security-policy"]

    async def test_media_origins_extend_the_spa_policy_for_segments_and_thumbnails(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        store = "http://localhost:9000"
        async with open_gateway(settings_for(media_origins=[store])) as client:
            policy = (await client.get("/")).headers["content-security-policy"]
            api = (await client.get("/api/v1/videos")).headers["content-security-policy"]
        directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
        for directive in ("connect-src", "img-src", "media-src"):
            assert store in directives[directive], directive
        assert store not in directives["script-src"] and store not in api

    async def test_hsts_is_sent_over_https(self, settings_for: Callable[..., GatewaySettings]) -> None:
        async with open_gateway(settings_for(), base_url="https://gateway.test") as client:
            response = await client.get("/api/v1/videos")
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
        assert received(response)["x-forwarded-proto"] == ["https"]


class TestCORS:
    ORIGIN = "https://app.streamify.test"

    async def test_a_preflight_from_an_allowed_origin_is_answered_at_the_gateway(
        self, settings_for: Callable[..., GatewaySettings], echoes: dict[str, ServerProcess]
    ) -> None:
        from tests.gateway.conftest import echo_count

        before = echo_count(echoes["catalog"])
        async with open_gateway(settings_for(cors_origins=[self.ORIGIN])) as client:
            response = await client.options(
                "/api/v1/videos",
                headers={
                    "Origin": self.ORIGIN,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == self.ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert echo_count(echoes["catalog"]) == before

    async def test_a_preflight_from_another_origin_is_refused(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        async with open_gateway(settings_for(cors_origins=[self.ORIGIN])) as client:
            response = await client.options(
                "/api/v1/videos",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "cors_rejected"
        assert "access-control-allow-origin" not in response.headers

    async def test_simple_requests_get_cors_headers_only_for_listed_origins(
        self, settings_for: Callable[..., GatewaySettings]
    ) -> None:
        async with open_gateway(settings_for(cors_origins=[self.ORIGIN])) as client:
            allowed = await client.get("/api/v1/videos", headers={"Origin": self.ORIGIN})
            other = await client.get("/api/v1/videos", headers={"Origin": "https://evil.example"})
        assert allowed.headers["access-control-allow-origin"] == self.ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "ratelimit-remaining" in allowed.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-origin" not in other.headers
