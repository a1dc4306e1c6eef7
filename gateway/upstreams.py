"""Upstream instances: round robin, ejection of failing instances, one circuit breaker per upstream.

The breaker is small and owned rather than a library: it sits on the hot path of every request
(``allow()`` is one comparison when closed), it must share its view with instance ejection,
/readyz and the metrics gauge, and the async candidates were either unmaintained (aiobreaker,
last release 2021) or route every call through an async unit-of-work and message bus (purgatory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum
from urllib.parse import urlsplit

from gateway.http1 import Pool


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_s`` lets one probe
    through (half-open); the probe's success closes it, its failure opens it again."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_s: float,
        on_change: Callable[[str, BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._on_change = on_change
        self._clock = clock

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    def allow(self) -> bool:
        """May a request go to this upstream now?"""
        if self.state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_s:
                return False
            self._set(BreakerState.HALF_OPEN)
        # Half-open: one probe at a time. A probe that never reports back (its client went away)
        # stops blocking others after another cool-down.
        if self._probe_started is not None and now - self._probe_started < self.reset_s:
            return False
        self._probe_started = now
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._probe_started = None
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        self._probe_started = None
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def record_neutral(self) -> None:
        """The request ended for a reason that says nothing about the upstream (client left)."""
        self._probe_started = None

    def retry_after_s(self) -> int:
        if self.state is BreakerState.OPEN:
            return max(1, int(self.reset_s - (self._clock() - self._opened_at)) + 1)
        return 1


class Instance:
    """One base URL of an upstream, with its connection pool and ejection deadline."""

    def __init__(self, url: str, *, connect_timeout_s: float, keepalive_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"unsupported upstream URL {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.netloc = parts.netloc.encode("ascii")
        self.pool = Pool(self.host, self.port, connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s)
        self.ejected_until = 0.0
        self.failures = 0

    def available(self, now: float) -> bool:
        return self.ejected_until <= now


class Upstream:
    def __init__(
        self,
        name: str,
        urls: list[str],
        *,
        connect_timeout_s: float,
        keepalive_s: float,
        eject_s: float,
        breaker: CircuitBreaker,
        on_instance_change: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError(f"upstream {name} has no instances")
        self.name = name
        self.instances = [
            Instance(u, connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s) for u in urls
        ]
        self.breaker = breaker
        self.eject_s = eject_s
        self._next = 0
        self._on_instance_change = on_instance_change

    def candidates(self) -> list[Instance]:
        """Instances to try, in order: the healthy ones round-robin, then ejected ones soonest-due
        (a last resort, so a single-instance upstream is still tried after a failure)."""
        instances = self.instances
        if len(instances) == 1:
            return instances
        start = self._next
        self._next = (start + 1) % len(instances)
        now = time.monotonic()
        ordered = instances[start:] + instances[:start]
        healthy = [i for i in ordered if i.ejected_until <= now]
        if len(healthy) == len(ordered):
            return healthy
        ejected = sorted((i for i in ordered if i.ejected_until > now), key=lambda i: i.ejected_until)
        return healthy + ejected

    def mark_failed(self, instance: Instance) -> None:
        instance.failures += 1
        was_available = instance.available(time.monotonic())
        instance.ejected_until = time.monotonic() + self.eject_s
        instance.pool.close()
        if was_available and self._on_instance_change is not None:
            self._on_instance_change(self.name, instance.url, False)

    def mark_ok(self, instance: Instance) -> None:
        if instance.failures or instance.ejected_until:
            instance.failures = 0
            instance.ejected_until = 0.0
            if self._on_instance_change is not None:
                self._on_instance_change(self.name, instance.url, True)

    def close(self) -> None:
        for instance in self.instances:
            instance.pool.close()
