"""Analytics ingest (events/s, bus to rollups) and query latency over a million events; prints JSON.

1. Creates a fresh database (``streamify_benchanalytics_<run>``, migrated, dropped at the end) and
   a fresh Redis stream, and generates ``--events`` synthetic events with the producers' shapes
   (docs/events.md): sessions of ``--creators`` creators' videos watched by ``--viewers`` viewers
   over 30 days — a start, heartbeats every 10 s with cumulative watch time and position, an end,
   a charge per started minute (about 80 % heartbeats, like a real bus).
2. Fills the stream with pipelined XADDs (the same-run reference: how fast Redis takes them).
3. Ingest: the real ``EventConsumer`` + the analytics handler (the code the service runs, in this
   process) drain the stream; the figure is events / seconds from the first read until every
   entry is acknowledged, i.e. until the rollups hold everything.
4. Queries: the analytics app (ASGI, in process, like ``streamify up`` minus the socket) answers
   ``GET /analytics/creator/overview`` (30 days) and ``GET /analytics/videos/{id}`` ``--queries``
   times each for random creators / videos; p50 and p95 latency.

Targets (issue 5): ingest >= 10,000 events/s; both queries p95 <= 50 ms.

    .venv/bin/python bench/analytics.py [--events 1000000] [--creators 300] [--viewers 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import RESULTS  # noqa: E402
from common.consumer import EventConsumer  # noqa: E402
from common.db import asyncpg_dsn, drop_database, ensure_database  # noqa: E402
from common.migrations import upgrade  # noqa: E402
from services.analytics import repository  # noqa: E402
from services.analytics.app import create_app  # noqa: E402
from services.analytics.settings import AnalyticsSettings  # noqa: E402
from services.analytics.tasks import Ingest, event_consumer, rules_from  # noqa: E402
from tests.identities import TokenMinter  # noqa: E402

PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
INGEST_TARGET = 10_000
QUERY_TARGET_MS = 50.0
DAYS = 30
PRICE, FEE = 10, 2


def _envelope(type_: str, source: str, at: datetime, payload: dict[str, Any]) -> str:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": type_,
            "version": 1,
            "occurred_at": at.isoformat(),
            "producer": source,
            "payload": payload,
        }
    )


def generate(total: int, creators: int, viewers: int, seed: int = 1) -> tuple[list[str], dict[str, Any]]:
    """``total`` envelopes (JSON) and the ids the queries pick from."""
    rng = random.Random(seed)
    creator_ids = [str(uuid.uuid4()) for _ in range(creators)]
    videos = [
        (str(uuid.uuid4()), rng.choice(creator_ids), rng.choice((60.0, 300.0, 900.0)))
        for _ in range(creators * 10)
    ]
    viewer_ids = [str(uuid.uuid4()) for _ in range(viewers)]
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS - 1)
    out: list[str] = []
    for video, creator, _duration in videos:
        payload = {
            "video_id": video,
            "creator_id": creator,
            "title": f"Video {video[:8]}",
            "price_per_minute": PRICE,
            "currency": "USD",
        }
        out.append(_envelope("catalog.video_created", "catalog", start, payload))
    while len(out) < total:
        video, creator, duration = rng.choice(videos)
        viewer = rng.choice(viewer_ids)
        sid = str(uuid.uuid4())
        at = start + timedelta(seconds=rng.uniform(0, DAYS * 86400 - 3600))
        ids = {"session_id": sid, "viewer_id": viewer, "video_id": video, "creator_id": creator}
        out.append(
            _envelope(
                "playback.session_started",
                "streaming",
                at,
                {
                    **ids,
                    "paid": True,
                    "price_per_minute": PRICE,
                    "currency": "USD",
                    "billing_unit_s": 60,
                    "duration_s": duration,
                },
            )
        )
        watched = 0.0
        beats = rng.randint(1, 20)
        for beat in range(beats):
            watched = min(duration, watched + 10)
            out.append(
                _envelope(
                    "playback.heartbeat",
                    "streaming",
                    at + timedelta(seconds=10 * (beat + 1)),
                    {
                        **ids,
                        "position_s": watched,
                        "watched_s": watched,
                        "duration_s": duration,
                        "playing": True,
                        "billed_units": int(watched // 60) + 1,
                        "status": "active",
                    },
                )
            )
            if beat % 6 == 0:
                unit = beat // 6
                out.append(
                    _envelope(
                        "billing.unit_charged",
                        "billing",
                        at + timedelta(seconds=10 * beat),
                        {
                            "transaction_id": str(uuid.uuid4()),
                            "key": f"{sid}:{unit}",
                            "session_id": sid,
                            "unit": unit,
                            **{k: ids[k] for k in ("viewer_id", "creator_id", "video_id")},
                            "amount": PRICE,
                            "creator_share": PRICE - FEE,
                            "platform_fee": FEE,
                            "currency": "USD",
                        },
                    )
                )
        end = at + timedelta(seconds=10 * beats + 1)
        out.append(
            _envelope(
                "playback.session_ended",
                "streaming",
                end,
                {
                    **ids,
                    "reason": "ended_by_viewer",
                    "paid": True,
                    "billed_units": beats // 6 + 1,
                    "charged_total": PRICE * (beats // 6 + 1),
                    "currency": "USD",
                    "watched_s": watched,
                    "position_s": watched,
                    "duration_s": duration,
                    "completed": watched >= 0.95 * duration,
                    "started_at": at.isoformat(),
                    "ended_at": end.isoformat(),
                },
            )
        )
    return out[:total], {"creators": creator_ids, "videos": [v[0] for v in videos], "start": start.date()}


async def fill(redis: Redis, stream: str, envelopes: list[str]) -> float:
    started = time.perf_counter()
    for i in range(0, len(envelopes), 10_000):
        async with redis.pipeline(transaction=False) as pipe:
            for envelope in envelopes[i : i + 10_000]:
                pipe.xadd(stream, {"event": envelope})
            await pipe.execute()
    return time.perf_counter() - started


async def ingest(
    redis: Redis, stream: str, settings: AnalyticsSettings, handler: Ingest, total: int
) -> dict[str, Any]:
    """The service's consumers (``settings.consumers`` of them, as the app runs them) drain the stream."""
    bench_settings = settings.model_copy(update={"event_stream": stream})
    consumers = [event_consumer(redis, handler, bench_settings, i) for i in range(settings.consumers)]
    await consumers[0].ensure_group()
    started = time.perf_counter()

    async def drain(consumer: EventConsumer) -> int:
        handled = 0
        while got := await consumer.run_once():
            handled += got
        return handled

    handled = sum(await asyncio.gather(*(drain(c) for c in consumers)))
    elapsed = time.perf_counter() - started
    pending = (await redis.xpending(stream, "analytics"))["pending"]
    return {
        "events": handled,
        "consumers": len(consumers),
        "batch_size": settings.consumer_batch_size,
        "seconds": round(elapsed, 2),
        "events_per_s": round(handled / elapsed),
        "pending_after": pending,
    }


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * len(ordered)) - 1], 2),
    }


async def queries(settings: AnalyticsSettings, ids: dict[str, Any], count: int) -> dict[str, Any]:
    minter = TokenMinter()
    admin = minter.token(uuid.uuid4(), "admin")
    rng = random.Random(2)
    app = create_app(settings, jwks_loader=minter.loader)
    results: dict[str, Any] = {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, path_of, token_of in (
                (
                    "creator_overview",
                    lambda: "/analytics/creator/overview",
                    lambda: minter.token(uuid.UUID(rng.choice(ids["creators"])), "creator"),
                ),
                ("video_analytics", lambda: f"/analytics/videos/{rng.choice(ids['videos'])}", lambda: admin),
            ):
                times = []
                for i in range(count + 20):
                    path, headers = path_of(), {"Authorization": f"Bearer {token_of()}"}
                    started = time.perf_counter()
                    response = await client.get(path, headers=headers)
                    took = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, response.text
                    if i >= 20:  # warm-up: connections, JWKS, statement caches
                        times.append(took)
                results[name] = {
                    **_ms(times),
                    "ratio_p95_to_target": round(_ms(times)["p95_ms"] / QUERY_TARGET_MS, 3),
                }
                sample = response.json()
            results["sample_overview_days"] = len(sample.get("daily", []))
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    url = f"{PG_BASE}/streamify_benchanalytics_{run}"
    stream = f"bench:analytics:{run}"
    redis = Redis.from_url(REDIS_URL)
    await ensure_database(url)
    try:
        await asyncio.to_thread(upgrade, "services.analytics", url)
        settings = AnalyticsSettings(
            database_url=url,
            redis_url=REDIS_URL,
            consume_events=False,
            log_level="WARNING",
            consumers=args.consumers,
            consumer_batch_size=args.batch,
        )
        t = time.perf_counter()
        envelopes, ids = generate(args.events, args.creators, args.viewers)
        generated_s = time.perf_counter() - t
        fill_s = await fill(redis, stream, envelopes)
        del envelopes
        pool = await repository.create_pool(asyncpg_dsn(url), max_size=settings.pool_max)
        try:
            handler = Ingest(pool, rules_from(settings))
            ingested = await ingest(redis, stream, settings, handler, args.events)
            rows = await pool.fetchval("SELECT count(*) FROM raw_events")
            sessions = await pool.fetchval("SELECT count(*) FROM watch_sessions")
        finally:
            await pool.close()
        query = await queries(settings, ids, args.queries)
        return {
            "bench": "analytics",
            "events": args.events,
            "generate_s": round(generated_s, 1),
            "reference_xadd_pipelined_per_s": round(args.events / fill_s),
            "ingest": {
                **ingested,
                "ratio_to_target": round(ingested["events_per_s"] / INGEST_TARGET, 2),
                "raw_events_stored": rows,
                "sessions": sessions,
            },
            "queries": query,
            "targets": {"ingest_events_per_s": INGEST_TARGET, "query_p95_ms": QUERY_TARGET_MS},
        }
    finally:
        await redis.delete(stream)
        await redis.aclose()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--creators", type=int, default=300)
    parser.add_argument("--viewers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    result = asyncio.run(main_async(parser.parse_args()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"analytics-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
