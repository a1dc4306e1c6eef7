"""The gateway in front of the five real services, each a uvicorn process on its own database.

Each public prefix must reach the service that owns it (seen in that service's own request
metrics), and the whole auth path works through the gateway: JWKS, register, login, /users/me
with the edge-verified token.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.settings import GatewaySettings
from streamify.embedded import free_port
from tests.conftest import migrated_database
from tests.gateway.conftest import SERVICES, ServerProcess, open_gateway, uvicorn_args

pytestmark = pytest.mark.slow

PASSWORD = "violet-Harbor-93-kayak"


@pytest.fixture(scope="module")
async def service_databases(service_env: dict[str, str]) -> dict[str, str]:
    return {name: await migrated_database(name) for name in SERVICES}


@pytest.fixture(scope="module")
def services(
    service_databases: dict[str, str],
    base_env: dict[str, str],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ServerProcess]]:
    ports = {name: free_port() for name in SERVICES}
    shared = {
        **os.environ,
        **base_env,
        "LOG_LEVEL": "INFO",
        "JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
        "STORAGE_LOCAL_DIR": str(tmp_path_factory.mktemp("storage")),
        "AUTH_ARGON2_TIME_COST": "1",
        "AUTH_ARGON2_MEMORY_COST_KIB": "8192",
        "AUTH_ARGON2_PARALLELISM": "1",
    }
    processes: dict[str, ServerProcess] = {}
    try:
        for name in SERVICES:
            env = {**shared, f"{name.upper()}_DATABASE_URL": service_databases[name]}
            args = uvicorn_args(f"services.{name}.app:create_app", ports[name], factory=True)
            processes[name] = ServerProcess(f"service-{name}", args, env, log_dir, ports[name])
        for process in processes.values():
            process.wait_ready("/readyz", timeout_s=90)
        yield processes
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture
async def mesh(
    services: dict[str, ServerProcess], settings_for: Callable[..., GatewaySettings]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        upstreams={name: [process.url] for name, process in services.items()},
        jwks_url=f"{services['auth'].url}/.well-known/jwks.json",
        jwt_issuer=GatewaySettings().jwt_issuer,
        jwt_audience=GatewaySettings().jwt_audience,
    )
    async with open_gateway(settings) as client:
        yield client


def requests_served(process: ServerProcess) -> float:
    """The service's own count of answered requests (its /metrics), health scrapes excluded."""
    text = httpx.get(f"{process.url}/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r"^http_requests_total\{.*\} (\S+)$", text, re.M))


PROBES = {
    "auth": "/api/v1/channels/00000000-0000-0000-0000-000000000000",
    "catalog": "/api/v1/videos/00000000-0000-0000-0000-000000000000",
    "streaming": "/api/v1/playback/sessions/00000000-0000-0000-0000-000000000000",
    "billing": "/api/v1/wallet/nothing-here",
    "analytics": "/api/v1/analytics/nothing-here",
}


class TestRoutingToRealServices:
    @pytest.mark.parametrize("owner", SERVICES)
    async def test_each_prefix_reaches_the_service_that_owns_it(
        self, mesh: httpx.AsyncClient, services: dict[str, ServerProcess], owner: str
    ) -> None:
        before = {name: requests_served(process) for name, process in services.items()}
        response = await mesh.get(PROBES[owner])
        after = {name: requests_served(process) for name, process in services.items()}
        # Whatever the service answers (its features land in later issues), it is its answer.
        assert response.status_code < 500, response.text
        assert after[owner] == before[owner] + 1
        assert {n: after[n] - before[n] for n in SERVICES if n != owner} == {
            n: 0 for n in SERVICES if n != owner
        }

    async def test_readyz_aggregates_the_real_services(self, mesh: httpx.AsyncClient) -> None:
        response = await mesh.get("/readyz")
        assert response.status_code == 200, response.text
        assert all(entry["ready"] for entry in response.json()["upstreams"].values())

    async def test_the_combined_openapi_lists_the_auth_api_under_the_public_prefix(
        self, mesh: httpx.AsyncClient
    ) -> None:
        paths = (await mesh.get("/api/openapi.json")).json()["paths"]
        assert "/api/v1/auth/login" in paths
        assert "/api/v1/users/me" in paths
        assert "/.well-known/jwks.json" in paths
        assert not any("/internal" in path for path in paths)


class TestAuthThroughTheGateway:
    async def test_register_login_and_me_with_the_edge_verified_token(self, mesh: httpx.AsyncClient) -> None:
        jwks = await mesh.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"]
        email = f"gw.{uuid.uuid4().hex[:10]}@example.com"
        registered = await mesh.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Via Gateway"},
        )
        assert registered.status_code == 201, registered.text
        login = await mesh.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        me = await mesh.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == email
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        refused = await mesh.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tampered}"})
        assert refused.status_code == 401
