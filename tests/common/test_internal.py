"""Service-to-service credentials: only a peer holding the mesh secret reaches /internal routes."""

from __future__ import annotations

import time
from typing import Annotated

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, Request

from common.app import install_error_handlers
from common.errors import Unauthorized
from common.internal import (
    SERVICE_TOKEN_HEADER,
    ServiceClient,
    mint_service_token,
    require_service,
    verify_service_token,
)

SECRET = "test-secret-for-internal-calls-0123456789"
OTHER_SECRET = "another-secret-of-sufficient-length-0123"


def internal_app() -> FastAPI:
    app = FastAPI()
    app.state.settings = type("S", (), {"internal_secret": SECRET})()
    install_error_handlers(app)
    calls: dict[str, int] = {"flaky": 0, "post": 0}
    app.state.calls = calls

    @app.get("/internal/ping")
    async def ping(caller: Annotated[str, Depends(require_service("streaming"))]) -> dict[str, str]:
        return {"caller": caller}

    @app.api_route("/internal/flaky", methods=["GET", "POST"])
    async def flaky(request: Request, caller: Annotated[str, Depends(require_service())]) -> dict[str, int]:
        calls["flaky"] += 1
        if calls["flaky"] % 3 != 0:
            raise_status = 503
            from fastapi import HTTPException

            raise HTTPException(raise_status)
        return {"calls": calls["flaky"]}

    return app


class TestServiceTokens:
    def test_a_minted_token_names_its_service(self):
        assert verify_service_token(SECRET, mint_service_token(SECRET, "billing")) == "billing"

    def test_a_token_from_another_secret_is_refused(self):
        with pytest.raises(Unauthorized):
            verify_service_token(SECRET, mint_service_token(OTHER_SECRET, "billing"))

    def test_an_expired_token_is_refused(self):
        token = mint_service_token(SECRET, "billing", ttl_s=-60)
        with pytest.raises(Unauthorized):
            verify_service_token(SECRET, token)

    def test_a_verified_token_still_expires(self):
        token = mint_service_token(SECRET, "billing", ttl_s=1)
        assert verify_service_token(SECRET, token) == "billing"  # now remembered as verified
        time.sleep(1.1)
        with pytest.raises(Unauthorized):
            verify_service_token(SECRET, token)

    def test_a_verified_token_counts_only_under_the_secret_that_verified_it(self):
        token = mint_service_token(SECRET, "billing")
        assert verify_service_token(SECRET, token) == "billing"
        with pytest.raises(Unauthorized):
            verify_service_token(OTHER_SECRET, token)

    def test_a_user_style_token_signed_with_the_secret_is_refused(self):
        now = int(time.time())
        claims = {"iss": "x", "aud": "streamify-internal", "iat": now, "exp": now + 60, "typ": "access"}
        with pytest.raises(Unauthorized):
            verify_service_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


class TestInternalRoutes:
    async def test_no_credential_is_401_problem(self):
        transport = httpx.ASGITransport(app=internal_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.get("/internal/ping")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "service_token_required"

    async def test_only_named_callers_are_let_through(self):
        transport = httpx.ASGITransport(app=internal_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            refused = await client.get(
                "/internal/ping", headers={SERVICE_TOKEN_HEADER: mint_service_token(SECRET, "catalog")}
            )
            allowed = await client.get(
                "/internal/ping", headers={SERVICE_TOKEN_HEADER: mint_service_token(SECRET, "streaming")}
            )
        assert refused.status_code == 403
        assert allowed.json() == {"caller": "streaming"}


class TestServiceClient:
    async def test_idempotent_requests_are_retried_through_transient_503s(self):
        app = internal_app()
        client = ServiceClient(
            "http://svc", service="streaming", secret=SECRET, transport=httpx.ASGITransport(app=app)
        )
        response = await client.get("/internal/flaky")
        await client.aclose()
        assert response.status_code == 200
        assert app.state.calls["flaky"] == 3

    async def test_a_plain_post_is_never_retried(self):
        app = internal_app()
        client = ServiceClient(
            "http://svc", service="streaming", secret=SECRET, transport=httpx.ASGITransport(app=app)
        )
        response = await client.post("/internal/flaky")
        await client.aclose()
        assert response.status_code == 503
        assert app.state.calls["flaky"] == 1

    async def test_a_post_with_an_idempotency_key_is_retried(self):
        app = internal_app()
        client = ServiceClient(
            "http://svc", service="streaming", secret=SECRET, transport=httpx.ASGITransport(app=app)
        )
        response = await client.post("/internal/flaky", headers={"Idempotency-Key": "session:1"})
        await client.aclose()
        assert response.status_code == 200
        assert app.state.calls["flaky"] == 3

    async def test_an_unreachable_peer_fails_after_bounded_attempts(self):
        client = ServiceClient("http://127.0.0.1:1", service="streaming", secret=SECRET, attempts=2)
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            await client.get("/internal/ping")
        await client.aclose()
        assert time.monotonic() - started < 5
