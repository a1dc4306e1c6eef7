"""Analytics service: consumes the event bus into rollups and answers creator, viewer and
platform statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_service_app
from common.db import asyncpg_dsn
from common.tokens import JWKSLoader
from services.analytics import repository
from services.analytics.api import routers
from services.analytics.settings import AnalyticsSettings
from services.analytics.tasks import Ingest, event_consumer, rules_from


def create_app(
    settings: AnalyticsSettings | None = None, *, jwks_loader: Callable[[FastAPI], JWKSLoader] | None = None
) -> FastAPI:
    settings = settings or AnalyticsSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await repository.create_pool(asyncpg_dsn(settings.database_url), max_size=settings.pool_max)
        app.state.analytics_pool = pool
        app.state.ingest = ingest = Ingest(pool, rules_from(settings))
        consumers = [
            event_consumer(app.state.redis, ingest, settings, index)
            for index in range(settings.consumers if settings.consume_events else 0)
        ]
        for consumer in consumers:
            consumer.start()
        try:
            yield
        finally:
            for consumer in consumers:
                await consumer.aclose()
            await pool.close()

    return build_service_app(
        name="analytics",
        settings=settings,
        routers=routers,
        lifespan=lifespan,
        jwks_loader=jwks_loader,
        description="Views, watch time, revenue and audience retention from the event bus.",
    )
