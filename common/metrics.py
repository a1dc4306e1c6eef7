"""Prometheus metrics every process shares: HTTP RED metrics labelled by route template (never by
raw path), database pool usage and Redis health.

Values that live outside the process (Redis answering, a queue's length, live sessions) are read
when Prometheus scrapes, not on a timer: ``on_scrape`` registers an async refresh that
``metrics_endpoint`` awaits (all of them at once, each within ``SCRAPE_REFRESH_TIMEOUT_S``) before
rendering, so every scrape sees current values and an idle process does no work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# FastAPI's built-in OpenTelemetry hooks stay off: they asked the global tracer provider (an
# os.environ read) on every request, ~4 % of a heartbeat's CPU, to find it unconfigured. Traces are
# ours (common.tracing, W3C traceparent); a deployment that exports spans adds instrumentation.
NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


UNMATCHED_ROUTE = "<unmatched>"
EXCLUDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/videos/{id}``), found the way Starlette routes."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP request except health and metrics scrapes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXCLUDED_PATHS:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            counter, histogram = _children(route_template(scope), scope["method"], status)
            counter.inc()
            histogram.observe(time.perf_counter() - started)


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _children(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled series for one (route, method, status), looked up once (``labels()`` takes a
    lock and builds a key each call, which shows at gateway request rates)."""
    key = (route, method, status)
    children = _CHILDREN.get(key)
    if children is None:
        labels = (route, method, str(status))
        children = _CHILDREN[key] = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
    return children


async def metrics_endpoint(_: Request) -> Response:
    """Prometheus exposition of this process's registry, scrape-time values refreshed first."""
    await refresh_for_scrape()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# --- scrape-time refreshes ------------------------------------------------------------------------

ScrapeRefresh = Callable[[], Awaitable[None]]
SCRAPE_REFRESH_TIMEOUT_S = 2.0
_refreshes: dict[object, ScrapeRefresh] = {}
log = structlog.get_logger("metrics")


def on_scrape(refresh: ScrapeRefresh) -> Callable[[], None]:
    """Run ``refresh`` before every exposition; returns the function that stops it (at shutdown)."""
    token = object()
    _refreshes[token] = refresh

    def remove() -> None:
        _refreshes.pop(token, None)

    return remove


async def refresh_for_scrape() -> None:
    """Every registered refresh, concurrently; one that fails or hangs leaves its old values."""
    refreshes = list(_refreshes.values())
    if not refreshes:
        return
    results = await asyncio.gather(
        *(asyncio.wait_for(refresh(), SCRAPE_REFRESH_TIMEOUT_S) for refresh in refreshes),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            log.warning("metrics_refresh_failed", error=repr(result))


# --- Redis health -------------------------------------------------------------------------------

REDIS_UP = Gauge(
    "streamify_redis_up",
    "1 when this process's Redis answered PING at the last scrape, 0 when it did not.",
)
REDIS_PING = Gauge(
    "streamify_redis_ping_seconds",
    "Round trip of the last scrape's PING to this process's Redis (up to the timeout when it failed).",
)
REDIS_PING_TIMEOUT_S = 1.0


class Pingable(Protocol):
    def ping(self) -> Awaitable[Any]: ...


def watch_redis(redis: Pingable) -> Callable[[], None]:
    """Ping ``redis`` at every scrape (``streamify_redis_up``, ``streamify_redis_ping_seconds``)."""

    async def ping() -> None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(redis.ping(), REDIS_PING_TIMEOUT_S)
        except Exception:
            REDIS_UP.set(0)
        else:
            REDIS_UP.set(1)
        finally:
            REDIS_PING.set(time.perf_counter() - started)

    return on_scrape(ping)


# --- job queues (arq) ----------------------------------------------------------------------------

QUEUE_JOBS = Gauge(
    "streamify_queue_jobs",
    "Jobs in an arq queue (running ones included), by queue and state: due now, or deferred "
    "(a retry backing off).",
    ["queue", "state"],
)


async def refresh_queue_depth(redis: Any, queue: str) -> None:
    """Read an arq queue's depth into ``streamify_queue_jobs``: the queue is a sorted set of job
    ids scored by when each may run (ms), so due = score <= now."""
    now_ms = time.time_ns() // 1_000_000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue, "-inf", now_ms)
        pipe.zcard(queue)
        due, total = await pipe.execute()
    QUEUE_JOBS.labels(queue, "due").set(int(due))
    QUEUE_JOBS.labels(queue, "deferred").set(int(total) - int(due))


def watch_queue(redis: Any, queue: str) -> Callable[[], None]:
    """Export ``queue``'s depth at every scrape."""

    async def refresh() -> None:
        await refresh_queue_depth(redis, queue)

    return on_scrape(refresh)


# --- database pools -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolUsage:
    checked_out: int
    open: int
    max: int


class DatabasePools(Collector):
    """Usage of every connection pool this process watches, read from the pools at each scrape
    (in-memory counters, no I/O). One series per pool name (``main``: the service's SQLAlchemy
    engine; ``ledger``: billing's asyncpg pool)."""

    def __init__(self) -> None:
        self._pools: dict[str, Callable[[], PoolUsage]] = {}

    def watch(self, name: str, usage: Callable[[], PoolUsage]) -> Callable[[], None]:
        self._pools[name] = usage

        def unwatch() -> None:
            if self._pools.get(name) is usage:
                del self._pools[name]

        return unwatch

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        checked_out, opened, limit = self._families()
        for name, usage in list(self._pools.items()):
            try:
                now = usage()
            except Exception as exc:  # a disposed pool: no sample rather than a failed scrape
                log.warning("pool_usage_unavailable", pool=name, error=repr(exc))
                continue
            checked_out.add_metric([name], now.checked_out)
            opened.add_metric([name], now.open)
            limit.add_metric([name], now.max)
        return [checked_out, opened, limit]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "streamify_db_pool_checked_out_connections",
                "Database connections in use (checked out of the pool) right now.",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "streamify_db_pool_open_connections",
                "Database connections the pool holds open (in use or idle).",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "streamify_db_pool_max_connections",
                "The most connections the pool will open (size plus overflow).",
                labels=["pool"],
            ),
        ]


DATABASE_POOLS = DatabasePools()
REGISTRY.register(DATABASE_POOLS)


def sqlalchemy_pool_usage(engine: Any, *, max_connections: int) -> Callable[[], PoolUsage]:
    """Usage of an (async) SQLAlchemy engine's QueuePool."""
    pool = engine.sync_engine.pool if hasattr(engine, "sync_engine") else engine.pool

    def usage() -> PoolUsage:
        checked_out = int(pool.checkedout())
        return PoolUsage(
            checked_out=checked_out, open=checked_out + int(pool.checkedin()), max=max_connections
        )

    return usage


def asyncpg_pool_usage(pool: Any) -> Callable[[], PoolUsage]:
    """Usage of an asyncpg pool."""

    def usage() -> PoolUsage:
        opened = int(pool.get_size())
        return PoolUsage(
            checked_out=opened - int(pool.get_idle_size()), open=opened, max=int(pool.get_max_size())
        )

    return usage


def watch_service_resources(*, engine: Any, redis: Pingable, max_connections: int) -> Callable[[], None]:
    """The infra metrics of a service (common.app): its SQLAlchemy pool and its Redis."""
    unwatch_pool = DATABASE_POOLS.watch(
        "main", sqlalchemy_pool_usage(engine, max_connections=max_connections)
    )
    unwatch_redis = watch_redis(redis)

    def unwatch() -> None:
        unwatch_pool()
        unwatch_redis()

    return unwatch
