"""The API gateway: small pure-ASGI middlewares around one streaming proxy.

Request path, outermost first::

    RequestId -> Metrics -> SecurityHeaders -> CORS -> Dispatch
        /api/v1/*, /.well-known/* : Route (404 for /internal and unknown) -> BodyLimit
                                    -> EdgeAuth -> RateLimit (+ revocation) -> Proxy
        everything else           : a small FastAPI app: /healthz /readyz /metrics
                                    /api/docs /api/openapi.json and the SPA's static files

Serve it with ``python -m gateway`` or the equivalent uvicorn command in gateway/server.py
(uvloop, one worker, the corked httptools protocol, no trusted proxy headers).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import install_error_handlers
from common.logging import RequestIdMiddleware, configure_logging
from common.metrics import NO_NATIVE_TELEMETRY, MetricsMiddleware, metrics_endpoint, watch_redis
from common.tokens import JWKSCache, JWKSLoader, TokenVerifier, http_jwks_loader
from gateway.accesslog import AccessLog
from gateway.auth import EdgeAuthMiddleware
from gateway.bodylimit import BodyLimitMiddleware
from gateway.cors import AllowListCORSMiddleware
from gateway.health import readiness
from gateway.memory import TokenMemory
from gateway.metrics import breaker_changed, instance_changed
from gateway.openapi import CombinedOpenAPI
from gateway.problems import send_problem
from gateway.proxy import Proxy
from gateway.ratelimit import EdgeStore, RateLimitMiddleware, RatePolicy
from gateway.routes import NoRoute, PathRefused, RouteTable
from gateway.security_headers import SecurityHeadersMiddleware
from gateway.settings import GatewaySettings
from gateway.upstreams import CircuitBreaker, Upstream

log = structlog.get_logger("gateway")


def failover_jwks_loader(urls: list[str]) -> JWKSLoader:
    """Fetch the JWKS from the first auth instance that answers."""
    loaders = [http_jwks_loader(url) for url in urls]

    async def load() -> dict[str, Any]:
        error: Exception | None = None
        for loader in loaders:
            try:
                return await loader()
            except Exception as exc:
                error = exc
        raise error or RuntimeError("no JWKS URL configured")

    return load


class GatewayResources:
    """What the gateway builds once: route table, upstreams, verifier; Redis and HTTP at startup."""

    def __init__(self, settings: GatewaySettings, *, jwks_loader: JWKSLoader | None = None) -> None:
        self.settings = settings
        self.table = RouteTable(
            settings.route_table(),
            classes=settings.route_class_table(),
            class_rules=settings.class_rule_list(),
            default_timeout_s=settings.upstream_timeout_s,
        )
        self.upstreams = {
            name: Upstream(
                name,
                urls,
                connect_timeout_s=settings.connect_timeout_s,
                keepalive_s=settings.upstream_keepalive_s,
                eject_s=settings.eject_s,
                breaker=CircuitBreaker(
                    name,
                    failure_threshold=settings.breaker_failure_threshold,
                    reset_s=settings.breaker_reset_s,
                    on_change=breaker_changed,
                ),
                on_instance_change=instance_changed,
            )
            for name, urls in settings.upstream_table().items()
        }
        for name, upstream in self.upstreams.items():
            breaker_changed(name, upstream.breaker.state)
            for instance in upstream.instances:
                instance_changed(name, instance.url, True)
        # Revocation is not checked here: it rides along with the rate-limit call (one round trip).
        self.verifier = TokenVerifier(
            JWKSCache(
                jwks_loader or failover_jwks_loader(settings.jwks_urls()), ttl_s=settings.jwks_cache_seconds
            ),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        self.policy = RatePolicy(self.table.classes)
        self.openapi = CombinedOpenAPI(
            self.upstreams,
            self.table,
            cache_s=settings.openapi_cache_s,
            timeout_s=settings.readiness_timeout_s,
        )
        self.access_log = AccessLog() if settings.access_log else None
        self.redis: Redis | None = None
        self.store: EdgeStore | None = None
        self.tokens: TokenMemory | None = None
        self.http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(self, _: Any) -> AsyncIterator[None]:
        self.redis = Redis.from_url(self.settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.store = EdgeStore(self.redis)
        if self.settings.edge_memory_s > 0:
            self.tokens = TokenMemory(self.redis, fresh_s=self.settings.edge_memory_s)
            self.tokens.start()
        unwatch_redis = watch_redis(self.redis)
        try:
            await self.store.load()
        except Exception as exc:
            # Not fatal: the script is loaded on first use once Redis answers.
            log.warning("edge_store_not_ready", error=repr(exc))
        self.http = httpx.AsyncClient(timeout=self.settings.readiness_timeout_s)
        if self.access_log is not None:
            self.access_log.start()
        # Everything built so far lives as long as the process: keep it out of the GC's scans.
        gc.freeze()
        log.info(
            "gateway_started",
            port=self.settings.port,
            upstreams={name: [i.url for i in up.instances] for name, up in self.upstreams.items()},
        )
        try:
            yield
        finally:
            unwatch_redis()
            for upstream in self.upstreams.values():
                upstream.close()
            await self.http.aclose()
            await self.store.close()
            if self.tokens is not None:
                await self.tokens.close()
                self.tokens = None
            await self.redis.aclose()
            if self.access_log is not None:
                await self.access_log.stop()
            self.store = None


class RouteMiddleware:
    """Resolves the route (or answers 404: /internal and unknown paths never reach an upstream)."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            match = self.table.resolve(scope["method"], scope["path"], scope.get("raw_path"))
        except PathRefused:
            log.warning("path_refused", path=scope["path"][:200])
            await send_problem(scope, receive, send, 404, "not_found", "There is nothing here.")
            return
        except NoRoute:
            await send_problem(scope, receive, send, 404, "not_found", "There is nothing here.")
            return
        scope["gateway.match"] = match
        scope["route"] = match.route  # the metrics label (route template, never the raw path)
        await self.app(scope, receive, send)


class Dispatch:
    """Public API paths go to the proxy chain; everything else to the gateway's own app."""

    def __init__(self, proxied: ASGIApp, local: ASGIApp) -> None:
        self.proxied = proxied
        self.local = local

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/api/v1/") or path.startswith("/.well-known/"):
                await self.proxied(scope, receive, send)
                return
        await self.local(scope, receive, send)


class SPAStaticFiles(StaticFiles):
    """Static files; unknown non-API paths fall back to index.html (client-side routing).

    The build's assets carry a content hash in their names, so they are cached for good; the
    page that names them is revalidated on every load, so a release reaches browsers at once.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as exc:
            spa_route = not scope["path"].startswith("/api/") and "." not in scope["path"].rsplit("/", 1)[-1]
            if exc.status_code == 404 and spa_route and scope["method"] in ("GET", "HEAD"):
                return FileResponse(f"{self.directory}/index.html", headers={"Cache-Control": "no-cache"})
            raise
        if path.startswith("assets/"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif path in ("", ".", "index.html") or path.endswith(".html"):
            response.headers["Cache-Control"] = "no-cache"
        return response


def build_local_app(resources: GatewayResources) -> FastAPI:
    app = FastAPI(
        telemetry=NO_NATIVE_TELEMETRY,
        title="Streamify gateway",
        lifespan=resources.lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The gateway process is alive; nothing else is consulted."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """200 when every upstream has a ready instance (and Redis answers), 503 otherwise."""
        assert resources.http is not None
        ready, body = await readiness(
            resources.upstreams,
            resources.http,
            resources.redis,
            timeout_s=resources.settings.readiness_timeout_s,
        )
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        """Every service's OpenAPI, merged, with the public paths."""
        assert resources.http is not None
        return JSONResponse(await resources.openapi.document(resources.http))

    @app.get("/api/docs", include_in_schema=False)
    async def docs(_: Request) -> HTMLResponse:
        """Swagger UI over the combined document."""
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="Streamify API")

    app.mount("/", SPAStaticFiles(directory=resources.settings.static_root(), html=True), name="static")
    return app


def create_app(settings: GatewaySettings | None = None, *, jwks_loader: JWKSLoader | None = None) -> ASGIApp:
    """The gateway as an ASGI app (``uvicorn gateway.app:create_app --factory``)."""
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level)
    # One line per readiness/OpenAPI/JWKS fetch is noise; failures are logged by the gateway.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    resources = GatewayResources(settings, jwks_loader=jwks_loader)

    proxied: ASGIApp = Proxy(resources.upstreams, access_log=resources.access_log)
    proxied = RateLimitMiddleware(
        proxied,
        store=lambda: resources.store,
        tokens=lambda: resources.tokens,
        memory_s=settings.edge_memory_s,
        policy=resources.policy,
        enabled=settings.rate_limit_enabled,
    )
    proxied = EdgeAuthMiddleware(proxied, verifier=lambda: resources.verifier)
    proxied = BodyLimitMiddleware(proxied)
    proxied = RouteMiddleware(proxied, resources.table)

    app: ASGIApp = Dispatch(proxied, build_local_app(resources))
    app = AllowListCORSMiddleware(app, origins=settings.cors_origins, max_age_s=settings.cors_max_age_s)
    app = SecurityHeadersMiddleware(
        app, spa_csp=settings.spa_content_security_policy(), hsts_max_age_s=settings.hsts_max_age_s
    )
    app = MetricsMiddleware(app)
    app = RequestIdMiddleware(app)
    return app
