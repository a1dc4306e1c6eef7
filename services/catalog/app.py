"""Catalog service: videos, their lifecycle, lists and search, comments, reactions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_service_app
from common.storage import storage_from_settings
from common.tokens import JWKSLoader
from services.catalog.api import routers
from services.catalog.settings import CatalogSettings
from services.catalog.tasks import arq_pool


def create_app(
    settings: CatalogSettings | None = None, *, jwks_loader: Callable[[FastAPI], JWKSLoader] | None = None
) -> FastAPI:
    """The catalog app; ``jwks_loader`` replaces fetching auth's JWKS (tests publish their own keys)."""
    settings = settings or CatalogSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_from_settings(
            settings.storage, ensure_bucket=settings.storage_create_bucket
        ) as storage:
            app.state.storage = storage
            # For the upload code's hand-off (tasks.enqueue_transcode); shares the Redis client's pool.
            app.state.arq = arq_pool(app.state.redis, queue_name=settings.transcode_queue)
            yield

    return build_service_app(
        name="catalog",
        settings=settings,
        routers=routers,
        lifespan=lifespan,
        jwks_loader=jwks_loader,
        description="Videos and their lifecycle, lists and full-text search, comments, reactions.",
    )
