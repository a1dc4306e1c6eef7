"""Every service answers the operator endpoints the same way, and owns exactly its own database."""

from __future__ import annotations

import importlib

import asyncpg
import pytest
from fastapi import FastAPI

from common.db import asyncpg_dsn
from common.outbox import OUTBOX_TABLE
from tests.conftest import SERVICES, migrated_database

SKELETONS = ("catalog", "streaming", "billing", "analytics")


def make_app(service: str, database_url: str) -> FastAPI:
    module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_cls = next(
        value
        for name, value in vars(settings_module).items()
        if name.endswith("Settings") and name != "ServiceSettings" and isinstance(value, type)
    )
    app: FastAPI = module.create_app(settings_cls(database_url=database_url))
    return app


@pytest.mark.parametrize("service", SKELETONS)
class TestOperatorEndpoints:
    async def test_healthz_answers_without_consulting_dependencies(self, service, asgi_client):
        app = make_app(service, "postgresql+asyncpg://nobody@127.0.0.1:1/none")
        async with asgi_client(app) as client:
            response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_is_200_when_database_and_redis_answer(self, service, asgi_client):
        app = make_app(service, await migrated_database(service))
        async with asgi_client(app) as client:
            response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "redis": "ok"}

    async def test_readyz_is_503_while_the_database_is_unreachable(self, service, asgi_client):
        app = make_app(service, "postgresql+asyncpg://nobody@127.0.0.1:1/none")
        async with asgi_client(app) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"].startswith("error")
        assert body["checks"]["redis"] == "ok"

    async def test_unknown_paths_are_problem_json_and_counted_without_raw_paths(self, service, asgi_client):
        app = make_app(service, await migrated_database(service))
        async with asgi_client(app) as client:
            missing = await client.get("/no/such/path/qzx-7", headers={"X-Request-ID": "req-abc-123"})
            metrics = await client.get("/metrics")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["code"] == "not_found"
        assert missing.json()["request_id"] == "req-abc-123"
        assert missing.headers["x-request-id"] == "req-abc-123"
        assert metrics.status_code == 200
        assert "http_request_duration_seconds_bucket" in metrics.text
        assert 'route="<unmatched>"' in metrics.text
        assert "qzx-7" not in metrics.text  # (a number could appear in any float sample)

    async def test_a_forged_request_id_is_replaced(self, service, asgi_client):
        app = make_app(service, await migrated_database(service))
        async with asgi_client(app) as client:
            response = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
        assert response.headers["x-request-id"] != "bad id\nwith newline"
        assert len(response.headers["x-request-id"]) == 32


async def _public_tables(database_url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


class TestDatabasePerService:
    @pytest.mark.parametrize("service", SERVICES)
    async def test_migrations_create_exactly_the_services_own_tables(self, service):
        models = importlib.import_module(f"services.{service}.models")
        tables = await _public_tables(await migrated_database(service))
        assert tables == set(models.metadata.tables) | {"alembic_version"}

    async def test_no_two_services_share_a_table(self):
        owners: dict[str, str] = {}
        for service in SERVICES:
            models = importlib.import_module(f"services.{service}.models")
            for table in models.metadata.tables:
                if table == OUTBOX_TABLE:  # the shared library's table, one copy in each producer's own DB
                    continue
                assert table not in owners, f"{table} belongs to {owners.get(table)} and {service}"
                owners[table] = service
