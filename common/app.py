"""The pieces every service app is built from: logging, errors, middlewares, health, resources."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis

from common.db import create_engine, session_factory
from common.errors import install_error_handlers
from common.health import check_database, check_redis, health_router
from common.logging import RequestIdMiddleware, configure_logging
from common.metrics import NO_NATIVE_TELEMETRY, MetricsMiddleware, watch_service_resources
from common.settings import ServiceSettings
from common.tokens import JWKSCache, JWKSLoader, TokenVerifier, http_jwks_loader, redis_revocation_check

ExtraLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def service_resources(
    app: FastAPI, settings: ServiceSettings, *, jwks_loader: JWKSLoader | None = None
) -> AsyncIterator[None]:
    """Engine, session factory, Redis and token verifier on ``app.state``; closed on shutdown."""
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    redis = Redis.from_url(settings.redis_url, decode_responses=False)
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.redis = redis
    app.state.verifier = TokenVerifier(
        JWKSCache(jwks_loader or http_jwks_loader(settings.jwks_url), ttl_s=settings.jwks_cache_seconds),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        is_revoked=redis_revocation_check(redis),
    )
    unwatch = watch_service_resources(
        engine=engine, redis=redis, max_connections=settings.db_pool_size + settings.db_max_overflow
    )
    try:
        yield
    finally:
        unwatch()
        await redis.aclose()
        await engine.dispose()


def _started(name: str, settings: ServiceSettings) -> None:
    # Everything built so far (modules, routes, pools, caches) lives as long as the process: keep it
    # out of the collector's full scans, which otherwise walk it all and stall requests meanwhile.
    gc.collect()
    gc.freeze()
    structlog.get_logger(name).info("service_started", port=settings.port)


def build_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    routers: Sequence[APIRouter],
    lifespan: ExtraLifespan | None = None,
    description: str = "",
    jwks_loader: Callable[[FastAPI], JWKSLoader] | None = None,
) -> FastAPI:
    """One FastAPI app with the shared shape; ``lifespan`` adds the service's own resources."""
    configure_logging(name, settings.log_level)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = jwks_loader(app) if jwks_loader else None
        async with service_resources(app, settings, jwks_loader=loader):
            if lifespan is None:
                _started(name, settings)
                yield
            else:
                async with lifespan(app):
                    _started(name, settings)
                    yield

    app = FastAPI(
        telemetry=NO_NATIVE_TELEMETRY,
        title=f"Streamify {name}",
        description=description,
        version="1.0.0",
        lifespan=app_lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.service_name = name
    install_error_handlers(app)
    app.include_router(health_router({"database": check_database, "redis": check_redis}))
    for router in routers:
        app.include_router(router)
    # Outermost first: the request id must be bound before metrics and handlers log anything.
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def settings_dump(settings: Any) -> dict[str, Any]:
    """Settings without secrets, for a start-up log line."""
    hidden = set(getattr(settings, "secret_fields", lambda: ())())
    return {k: ("***" if k in hidden else v) for k, v in settings.model_dump().items()}
