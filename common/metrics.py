"""Prometheus RED metrics labelled by route template, never by raw path."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
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
    """Prometheus exposition of this process's registry."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
