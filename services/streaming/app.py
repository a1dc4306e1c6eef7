"""Streaming service: playback sessions, heartbeats that drive pay-per-minute billing, watch
history, and HLS delivery per session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI
from starlette.middleware import Middleware

from common.app import build_service_app
from common.events import EventBus
from common.internal import ServiceClient
from common.outbox import OutboxRelay
from common.periodic import stop
from common.storage import storage_from_settings
from common.tokens import JWKSCache, JWKSLoader, TokenVerifier, http_jwks_loader
from services.streaming import metrics
from services.streaming.api import routers
from services.streaming.delivery import router as delivery_router
from services.streaming.fastpath import HeartbeatFastPath
from services.streaming.live import LiveSessions
from services.streaming.peers import (
    AiohttpPoster,
    BillingClient,
    CatalogClient,
    ChargePoster,
    ServiceClientPoster,
)
from services.streaming.progress import ProgressLog, run_progress_flushes
from services.streaming.service import Clock, Playback, system_clock_ms
from services.streaming.settings import StreamingSettings
from services.streaming.tasks import run_expiry_sweeps

SERVICE = "streaming"


def create_app(
    settings: StreamingSettings | None = None,
    *,
    jwks_loader: Callable[[FastAPI], JWKSLoader] | None = None,
    clock: Clock | None = None,
    catalog_transport: httpx.AsyncBaseTransport | None = None,
    billing_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The streaming app. Tests replace auth's JWKS (``jwks_loader``), the clock (milliseconds) and
    the transports to catalog and billing (their real apps in-process over ASGI)."""
    settings = settings or StreamingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        interval_ms = round(settings.heartbeat_interval_seconds * 1000)
        # A charging heartbeat holds its session's lease at most this long (every attempt of
        # every due unit timing out); a crashed holder's lease lapses by itself.
        lease_ms = round((settings.billing_timeout_s * settings.billing_attempts + 1) * 1000 * 2)
        catalog = ServiceClient(
            settings.catalog_url,
            service=SERVICE,
            secret=settings.internal_secret,
            timeout_s=settings.catalog_timeout_s,
            transport=catalog_transport,
        )
        billing: ChargePoster
        if billing_transport is not None:
            billing = ServiceClientPoster(
                ServiceClient(
                    settings.billing_url,
                    service=SERVICE,
                    secret=settings.internal_secret,
                    timeout_s=settings.billing_timeout_s,
                    attempts=settings.billing_attempts,
                    transport=billing_transport,
                )
            )
        else:
            billing = AiohttpPoster(
                settings.billing_url,
                service=SERVICE,
                secret=settings.internal_secret,
                timeout_s=settings.billing_timeout_s,
                attempts=settings.billing_attempts,
                max_connections=settings.billing_max_in_flight,
            )
        app.state.playback = playback = Playback(
            settings=settings,
            sessions=app.state.sessions,
            live=LiveSessions(
                app.state.redis,
                ttl_ms=interval_ms * settings.missed_heartbeats_to_end,
                retention_ms=settings.ended_state_retention_s * 1000,
                lease_ms=lease_ms,
            ),
            catalog=CatalogClient(catalog),
            billing=BillingClient(billing),
            progress=ProgressLog(app.state.sessions),
            clock=clock or system_clock_ms,
        )
        # Heartbeats check the revoked-token list inside their one Redis script (see api.py).
        loader = jwks_loader(app) if jwks_loader else http_jwks_loader(settings.jwks_url)
        app.state.heartbeat_verifier = TokenVerifier(
            JWKSCache(loader, ttl_s=settings.jwks_cache_seconds),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        unwatch_sessions = metrics.watch_live_sessions(app.state.redis)
        # Session starts and ends leave through the outbox; heartbeat summaries are added to the
        # stream by the heartbeat script itself (live.py).
        app.state.outbox = outbox = OutboxRelay(app.state.engine, EventBus(app.state.redis), source=SERVICE)
        outbox.start()
        tasks = [
            asyncio.create_task(
                run_progress_flushes(playback.progress, interval_s=settings.progress_flush_interval_s),
                name="streaming-progress",
            )
        ]
        if settings.sweep_interval_s > 0:
            tasks.append(
                asyncio.create_task(
                    run_expiry_sweeps(playback, interval_s=settings.sweep_interval_s), name="streaming-expiry"
                )
            )
        try:
            async with storage_from_settings(settings.storage, ensure_bucket=False) as storage:
                app.state.storage = storage
                yield
        finally:
            unwatch_sessions()
            await stop(tasks)
            try:
                await playback.progress.flush()
            except Exception:
                structlog.get_logger(SERVICE).exception(
                    "progress_not_flushed", pending=playback.progress.pending
                )
            await playback.catalog.aclose()
            await playback.billing.aclose()
            await outbox.aclose()

    app = build_service_app(
        name=SERVICE,
        settings=settings,
        # Delivery first: routers are tried in order on every request, and segments are the most frequent.
        routers=[delivery_router, *routers],
        lifespan=lifespan,
        jwks_loader=jwks_loader,
        description=(
            "Playback sessions, heartbeats that drive pay-per-minute billing, watch history, and HLS "
            "playlists and segments authorized per session."
        ),
    )
    # Innermost of the shared middlewares (request id, metrics), ahead of FastAPI's routing.
    app.user_middleware.append(Middleware(HeartbeatFastPath))
    return app
