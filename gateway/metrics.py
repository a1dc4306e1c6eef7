"""Gateway metrics on top of the shared RED metrics (common.metrics, labelled by route template).

The proxy labels each request with its route prefix (``/api/v1/videos``) through ``scope["route"]``
so the shared middleware never sees a raw path; the series below describe the upstreams.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.upstreams import BreakerState

UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests_total",
    "Requests the gateway sent upstream, by upstream and outcome (HTTP status or error code).",
    ["upstream", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_response_seconds",
    "Time from sending a request upstream to receiving its response head.",
    ["upstream"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BREAKER_STATE = Gauge(
    "gateway_circuit_breaker_state",
    "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
)
INSTANCE_UP = Gauge(
    "gateway_upstream_instance_up",
    "1 while an upstream instance takes traffic, 0 while it is ejected after a failure.",
    ["upstream", "instance"],
)
EDGE_REJECTIONS = Counter(
    "gateway_edge_rejections_total",
    "Requests answered at the edge without reaching an upstream, by reason code.",
    ["code"],
)
REDIS_ERRORS = Counter(
    "gateway_redis_errors_total",
    "Rate-limit/revocation lookups that failed (the request was let through, services re-check).",
)


class UpstreamMetrics:
    """Pre-bound label children so the hot path does one dict lookup instead of ``labels()``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.latency = UPSTREAM_LATENCY.labels(upstream)
        self._outcomes: dict[object, Counter] = {}

    def count(self, outcome: int | str) -> None:
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = UPSTREAM_REQUESTS.labels(self.upstream, str(outcome))
        child.inc()


def breaker_changed(upstream: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(upstream).set(int(state))


def instance_changed(upstream: str, instance: str, up: bool) -> None:
    INSTANCE_UP.labels(upstream, instance).set(1 if up else 0)


_rejections: dict[str, Counter] = {}


def count_rejection(code: str) -> None:
    child = _rejections.get(code)
    if child is None:
        child = _rejections[code] = EDGE_REJECTIONS.labels(code)
    child.inc()
