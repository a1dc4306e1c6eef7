"""The transcoder worker's metrics, served by prometheus_client's own HTTP server on
TRANSCODER_METRICS_PORT (a worker is an arq process, not a web app).

- ``streamify_transcode_jobs_total{outcome}`` and ``streamify_transcode_job_duration_seconds{outcome}``:
  each run of a job (a retried job counts once per try): ready, failed (bad input, or gave up after
  the last try), retry (transient trouble: it runs again), gone (video deleted), skipped (no longer
  processing), cancelled (the worker is stopping; the job goes back to the queue), error (an
  exception the job did not expect).
- ``streamify_transcode_realtime_factor``: seconds of video encoded per wall-clock second (the whole
  ladder in one ffmpeg pass), per ready job.
- ``streamify_transcode_jobs_in_progress``: jobs this worker runs now (pool utilisation is the sum
  over workers divided by their count).
- ``streamify_queue_jobs{queue,state}`` (common.metrics) and the shared Redis health gauges: read
  from Redis every ``REFRESH_INTERVAL_S`` by a task of the worker (the HTTP server runs in its own
  thread, away from the worker's event loop and its Redis client). Every worker, and the catalog,
  exports the same queue depth: aggregate it with ``max``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog
from arq import Retry
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from redis.asyncio import Redis

from common.metrics import REDIS_PING, REDIS_PING_TIMEOUT_S, REDIS_UP, refresh_queue_depth

log = structlog.get_logger("transcoder")
T = TypeVar("T")

REFRESH_INTERVAL_S = 5.0
OUTCOMES = ("ready", "failed", "retry", "gone", "skipped", "cancelled", "error")

JOBS = Counter(
    "streamify_transcode_jobs_total",
    "Transcode job runs by outcome (ready, failed, retry, gone, skipped, cancelled, error).",
    ["outcome"],
)
JOB_DURATION = Histogram(
    "streamify_transcode_job_duration_seconds",
    "Wall time of one transcode job run, by outcome.",
    ["outcome"],
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
REALTIME_FACTOR = Histogram(
    "streamify_transcode_realtime_factor",
    "Seconds of video encoded per second of wall time, per ready job (the whole ladder in one pass).",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50),
)
IN_PROGRESS = Gauge(
    "streamify_transcode_jobs_in_progress",
    "Transcode jobs this worker is running now.",
)
for _outcome in OUTCOMES:
    JOBS.labels(_outcome)
    JOB_DURATION.labels(_outcome)


async def observe_job(run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await one job run, counting and timing it by its outcome (the ``status`` it returns, or how
    it ended)."""
    started = time.perf_counter()
    outcome = "error"
    IN_PROGRESS.inc()
    try:
        result = await run
        status = str(result.get("status", ""))
        outcome = status if status in OUTCOMES else "error"
        return result
    except Retry:
        outcome = "retry"
        raise
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        IN_PROGRESS.dec()
        JOBS.labels(outcome).inc()
        JOB_DURATION.labels(outcome).observe(time.perf_counter() - started)


def observe_realtime_factor(media_s: float, wall_s: float) -> None:
    if media_s > 0 and wall_s > 0:
        REALTIME_FACTOR.observe(media_s / wall_s)


def serve(host: str, port: int) -> None:
    """Serve /metrics on ``host:port`` (port 0: not at all). A port in use is logged, not fatal:
    transcoding matters more than its metrics."""
    if port == 0:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics_port_unavailable", host=host, port=port, error=str(exc))
        return
    log.info("metrics_serving", host=host, port=port)


async def refresh(redis: Redis, queue: str) -> None:
    """Queue depth and Redis health, once."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(refresh_queue_depth(redis, queue), REDIS_PING_TIMEOUT_S)
    except Exception:
        REDIS_UP.set(0)
    else:
        REDIS_UP.set(1)
    finally:
        REDIS_PING.set(time.perf_counter() - started)


async def refresh_forever(redis: Redis, queue: str, *, interval_s: float = REFRESH_INTERVAL_S) -> None:
    while True:
        await refresh(redis, queue)
        await asyncio.sleep(interval_s)
