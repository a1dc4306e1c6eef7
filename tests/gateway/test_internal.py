"""/internal/* is never routed, however the path is spelled (the upstream never sees it)."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import ServerProcess, echo_count, raw_request

# Request targets exactly as a client might put them on the request line.
SMUGGLED = [
    "/api/v1/internal/videos/1",
    "/api/v1/videos/internal/x",
    "/api/v1/videos/1/internal",
    "/api/v1/INTERNAL/x",
    "/api/v1/Internal/x",
    "/api/v1/videos/../internal/x",
    "/api/v1/videos/./x",
    "/api/v1/videos/%2e%2e/internal/x",
    "/api/v1/%69nternal/x",
    "/api/v1/%2569nternal/x",
    "/api/v1/%252569nternal/x",
    "/api/v1/videos%2f..%2finternal/x",
    "/api/v1/internal;jsessionid=1/x",
    "/api/v1/videos\\..\\internal",
    "/api/v1/videos/%5c..%5cinternal",
    "/api/v1//internal/x",
    "/api/v1/internal%00/x",
    "/.well-known/../api/v1/internal/x",
]


class TestInternalPathsAreUnreachable:
    @pytest.mark.parametrize("target", SMUGGLED)
    def test_every_spelling_is_refused_with_a_404_problem(
        self, gateway_process: ServerProcess, echoes: dict[str, ServerProcess], target: str
    ) -> None:
        before = {name: echo_count(process) for name, process in echoes.items()}
        status, answer = raw_request(
            gateway_process.port, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
        )
        assert status in (400, 404), answer
        if status == 404:
            assert b"application/problem+json" in answer
            assert b'"code":"not_found"' in answer
        assert {name: echo_count(process) for name, process in echoes.items()} == before

    async def test_the_public_api_next_to_it_still_works(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/api/v1/videos/internals-of-cameras")
        assert response.status_code == 200
        assert response.json()["path"] == "/videos/internals-of-cameras"
