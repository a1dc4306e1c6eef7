"""Catalog service: videos, their lifecycle, lists and search, comments, reactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from common.app import build_service_app
from common.events import EventBus
from common.metrics import watch_queue
from common.outbox import OutboxRelay
from common.periodic import stop
from common.storage import storage_from_settings
from common.tokens import JWKSLoader
from services.catalog import uploads as upload_routes
from services.catalog.api import routers
from services.catalog.settings import CatalogSettings
from services.catalog.tasks import arq_pool, enqueue_transcode, run_stall_sweeps
from services.catalog.upload_service import UploadLimits, Uploads, run_expiry_sweeps


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
            app.state.uploads = uploads = Uploads(
                sessions=app.state.sessions,
                storage=storage,
                redis=app.state.redis,
                limits=UploadLimits.from_settings(settings),
                on_uploaded=partial(enqueue_transcode, app.state.arq),
            )
            unwatch_queue = watch_queue(app.state.redis, settings.transcode_queue)
            app.state.outbox = outbox = OutboxRelay(
                app.state.engine, EventBus(app.state.redis), source="catalog"
            )
            outbox.start()
            sweeper = None
            if settings.upload_sweep_interval_s > 0:
                sweeper = asyncio.create_task(
                    run_expiry_sweeps(uploads, interval_s=settings.upload_sweep_interval_s),
                    name="catalog-upload-expiry",
                )
            sweepers = [] if sweeper is None else [sweeper]
            if settings.processing_sweep_interval_s > 0:
                sweepers.append(
                    asyncio.create_task(
                        run_stall_sweeps(
                            app.state.sessions,
                            app.state.arq,
                            queue_name=settings.transcode_queue,
                            interval_s=settings.processing_sweep_interval_s,
                            stall_s=settings.processing_stall_s,
                            max_restarts=settings.processing_max_restarts,
                        ),
                        name="catalog-stall-sweep",
                    )
                )
            try:
                yield
            finally:
                unwatch_queue()
                await stop(sweepers)
                await outbox.aclose()

    return build_service_app(
        name="catalog",
        settings=settings,
        routers=[*routers, *upload_routes.routers],
        lifespan=lifespan,
        jwks_loader=jwks_loader,
        description=(
            "Videos and their lifecycle, resumable (tus) and one-shot uploads, lists and full-text "
            "search, comments, reactions."
        ),
    )
