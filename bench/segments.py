"""Segment authorization: redirects per second and latency, direct and through the gateway; JSON out.

Set-up (127.0.0.1 only, everything stopped at the end):

- an S3 server (moto's, as the tests use) with one video's HLS set stored the way the transcoder
  lays it out (``videos/{id}/master.m3u8``, ``360p/`` and ``720p/`` with ``--segments`` segments
  each; the segment bytes are filler, nothing here follows the redirects);
- live sessions written to Redis (database 13) as the heartbeat code keeps them (hash
  ``streaming:session:{id}``, status active), each with a credential minted by the service;
- the streaming service (``services.streaming.app:create_app``, its own database created and
  dropped) under uvicorn, one worker, and the gateway in front of it as ``bench/gateway.py`` runs
  it. Segment routes get a route class without per-IP/per-user limits (``--edge-limits`` puts a
  limit, and so the gateway's Redis check per request, back, for comparison).

Two kinds of segment traffic:

- hot: ``--hot-sessions`` sessions asking for all their segments in turn, each many times a
  second, so the service answers from its 1 s session-state cache (a player starting up);
- cold: ``--cold-sessions`` sessions asking once per pass, seconds apart as a playing viewer does
  (one segment per ~6 s), so every request reads its session's state from Redis (batched).

Measured with the same client (wrk, rotating over the URLs; a Python client when wrk is
missing), alternating runs, median of ``--rounds``:

1. closed loop, ``--connections`` connections: req/s, p50/p99 and CPU per request of ``GET
   /healthz`` (trivial baseline) and of segment requests (302 to a presigned URL), straight at
   the service and through the gateway (``/api/v1/healthz`` routed to the service's /healthz in
   the same route class);
2. paced at ``--rate`` req/s offered (default 3000, the target): p50/p99 through the gateway.

Targets (issue 4): >= 3,000 redirects/s through the gateway, p99 <= 20 ms.

    apt-get install -y wrk      # optional
    .venv/bin/python bench/segments.py [--seconds 8] [--rounds 3] [--rate 3000] [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from bench.gateway import GATEWAY_HTTP, Process, free_port, uvicorn, wait_ready  # noqa: E402
from bench.wrk import WRK_DONE, paced_delay  # noqa: E402
from common.db import drop_database, ensure_database  # noqa: E402
from common.migrations import upgrade  # noqa: E402
from common.storage import S3Storage  # noqa: E402
from gateway.settings import DEFAULT_CLASS_RULES  # noqa: E402
from services.streaming.credentials import mint_playback_credential  # noqa: E402

PYTHON = sys.executable
PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RESULTS = ROOT / "bench" / "results"
RENDITIONS = ("360p", "720p")
BUCKET = "bench-segments"
S3_KEYS = {"S3_ACCESS_KEY_ID": "bench-access-key", "S3_SECRET_ACCESS_KEY": "bench-secret-key"}
# The route class segment and playlist requests get at the gateway (what this issue needs there).
PLAYBACK_CLASS = {"rate_ip": None, "rate_user": None, "timeout_s": 10}
PLAYBACK_RULES = [
    {"pattern": "/api/v1/playback/sessions/*/*/*", "class": "playback_media", "methods": ["GET", "HEAD"]},
    {"pattern": "/api/v1/playback/sessions/*/*/*/*", "class": "playback_media", "methods": ["GET", "HEAD"]},
]


# -- S3 and Redis set-up ------------------------------------------------------------------------
def start_s3(logdir: Path) -> tuple[Process, str]:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    proc = Process("s3", [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env, logdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"moto exited: {proc.log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500:
                return proc, url
        time.sleep(0.1)
    raise RuntimeError("moto did not start")


async def store_video(s3_url: str, video_id: uuid.UUID, segments: int) -> None:
    """Playlists and filler segments, as the transcoder lays them out."""
    master = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, bandwidth in zip(RENDITIONS, (900_000, 3_000_000), strict=True):
        master += [f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth}", f"{name}/index.m3u8"]
    media = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for n in range(segments):
        media += ["#EXTINF:6.000000,", f"seg_{n:05d}.ts"]
    media.append("#EXT-X-ENDLIST")
    async with S3Storage(
        bucket=BUCKET,
        endpoint_url=s3_url,
        access_key_id=S3_KEYS["S3_ACCESS_KEY_ID"],
        secret_access_key=S3_KEYS["S3_SECRET_ACCESS_KEY"],
        path_style=True,
    ) as storage:
        await storage.ensure_bucket()
        prefix = f"videos/{video_id}/"
        mpegurl = "application/vnd.apple.mpegurl"
        await storage.put(f"{prefix}master.m3u8", "\n".join(master).encode(), content_type=mpegurl)
        for name in RENDITIONS:
            await storage.put(f"{prefix}{name}/index.m3u8", "\n".join(media).encode(), content_type=mpegurl)
            filler = bytes(188) * 8
            await asyncio.gather(
                *(
                    storage.put(f"{prefix}{name}/seg_{n:05d}.ts", filler, content_type="video/mp2t")
                    for n in range(segments)
                )
            )


async def write_sessions(video_id: uuid.UUID, count: int, secret: str) -> list[tuple[uuid.UUID, str]]:
    from redis.asyncio import Redis

    sessions = []
    redis = Redis.from_url(REDIS_URL)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(count):
                sid = uuid.uuid4()
                credential = mint_playback_credential(
                    secret, session_id=sid, video_id=video_id, expires_at=int(time.time()) + 3600
                )
                key = f"streaming:session:{sid}"
                pipe.hset(
                    key,
                    mapping={
                        "status": "active",
                        "video_id": str(video_id),
                        "viewer_id": str(uuid.uuid4()),
                        "expires_at_ms": str(int((time.time() + 3600) * 1000)),
                    },
                )
                pipe.expire(key, 3600)
                sessions.append((sid, credential))
            await pipe.execute()
    finally:
        await redis.aclose()
    return sessions


# -- load ----------------------------------------------------------------------------------------
def wrk_script(paths: list[str], delay_ms: float | None) -> str:
    lines = ["local paths = {"] + [f'  "{path}",' for path in paths] + ["}", "local i = 0"]
    lines += [
        "function request()",
        "  i = i % #paths + 1",
        '  return wrk.format("GET", paths[i])',
        "end",
    ]
    return "\n".join(lines) + (paced_delay(delay_ms) if delay_ms is not None else "") + WRK_DONE


def run_wrk(
    base: str, paths: list[str], *, seconds: float, connections: int, delay_ms: float | None = None
) -> dict[str, Any]:
    result = wrk.run_wrk(base, wrk_script(paths, delay_ms), seconds=seconds, connections=connections)
    del result["p90_ms"]
    result["status_4xx_5xx"] = result.pop("non_2xx")
    return result


async def _python_load(
    base: str, paths: list[str], *, seconds: float, connections: int, delay_ms: float | None
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = bad = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal errors, bad
            i = offset
            while time.perf_counter() < deadline:
                i = (i + 1) % len(paths)
                started = time.perf_counter()
                try:
                    async with session.get(paths[i], allow_redirects=False) as response:
                        await response.read()
                        bad += response.status >= 400
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(n * 7) for n in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 3)

    return {
        "req_s": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "status_4xx_5xx": bad,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


def load(
    base: str, paths: list[str], *, seconds: float, connections: int, delay_ms: float | None = None
) -> dict[str, Any]:
    if shutil.which("wrk"):
        return run_wrk(base, paths, seconds=seconds, connections=connections, delay_ms=delay_ms)
    return asyncio.run(_python_load(base, paths, seconds=seconds, connections=connections, delay_ms=delay_ms))


PACED_CONNECTIONS = 64


def calibrate_delay(base: str, paths: list[str], *, rate: float) -> float:
    """The per-connection mean pause (ms) at which PACED_CONNECTIONS offer about ``rate`` req/s."""
    delay_ms = PACED_CONNECTIONS * 1000 / rate
    for _ in range(2):
        probe = load(base, paths, seconds=3, connections=PACED_CONNECTIONS, delay_ms=delay_ms)
        delay_ms = max(0.05, delay_ms * probe["req_s"] / rate)
    return delay_ms


# -- the run -----------------------------------------------------------------------------------
@contextlib.contextmanager
def stack(args: argparse.Namespace, logdir: Path) -> Iterator[dict[str, Any]]:
    procs: list[Process] = []
    database = f"{PG_BASE}/streamify_bench_segments_{uuid.uuid4().hex[:8]}"
    try:
        s3, s3_url = start_s3(logdir)
        procs.append(s3)
        video_id = uuid.uuid4()
        asyncio.run(store_video(s3_url, video_id, args.segments))
        secret = f"bench-playback-{uuid.uuid4().hex}"
        count = max(args.hot_sessions, args.cold_sessions)
        sessions = asyncio.run(write_sessions(video_id, count, secret))

        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "REDIS_URL": REDIS_URL,
            "LOG_LEVEL": "WARNING",
            "INTERNAL_SECRET": f"bench-internal-{uuid.uuid4().hex}",
        }
        asyncio.run(ensure_database(database))
        upgrade("services.streaming", database)
        service_env = {
            **env,
            "STREAMING_DATABASE_URL": database,
            "STREAMING_PLAYBACK_SECRET": secret,
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT_URL": s3_url,
            "S3_BUCKET": BUCKET,
            "S3_PATH_STYLE": "true",
            **S3_KEYS,
        }
        service_port, gateway_port = free_port(), free_port()
        service = Process("streaming", uvicorn(args.service_app, service_port), service_env, logdir)
        procs.append(service)
        service_url = f"http://127.0.0.1:{service_port}"
        wait_ready(f"{service_url}/healthz", service)

        rules = [
            *DEFAULT_CLASS_RULES,
            *PLAYBACK_RULES,
            {"pattern": "/api/v1/healthz", "class": "playback_media"},
        ]
        playback_class = (
            {"rate_ip": "1000000000/hour", "rate_user": "1000000000/hour", "timeout_s": 10}
            if args.edge_limits
            else PLAYBACK_CLASS
        )
        gateway_env = {
            **env,
            "LOG_LEVEL": "INFO",
            "GATEWAY_UPSTREAMS": json.dumps({"streaming": [service_url], "bench": [service_url]}),
            "GATEWAY_ROUTES": json.dumps({"/api/v1/healthz": "bench"}),
            "GATEWAY_ROUTE_CLASSES": json.dumps({"playback_media": playback_class}),
            "GATEWAY_CLASS_RULES": json.dumps(rules),
        }
        gateway = Process(
            "gateway",
            [*uvicorn("gateway.app:create_app", gateway_port, http=GATEWAY_HTTP), "--no-proxy-headers"],
            gateway_env,
            logdir,
        )
        procs.append(gateway)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_ready(f"{gateway_url}/healthz", gateway)
        yield {
            "service": service,
            "gateway": gateway,
            "service_url": service_url,
            "gateway_url": gateway_url,
            "video_id": video_id,
            "sessions": sessions,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(database))


def hot_paths(sessions: list[tuple[uuid.UUID, str]], segments: int, prefix: str = "") -> list[str]:
    """Every segment of every session, interleaved: each session asks many times a second, so its
    state is nearly always in the service's 1 s cache (a player starting up, or a small test)."""
    paths = []
    for n in range(segments):
        for index, (sid, credential) in enumerate(sessions):
            rendition = RENDITIONS[(n + index) % len(RENDITIONS)]
            paths.append(f"{prefix}/playback/sessions/{sid}/{credential}/{rendition}/seg_{n:05d}.ts")
    return paths


def cold_paths(sessions: list[tuple[uuid.UUID, str]], segments: int, prefix: str = "") -> list[str]:
    """One segment per session per pass over many sessions: a session asks again only seconds later,
    as a playing viewer does (one segment per ~6 s), so every request reads its state from Redis."""
    paths = []
    for index, (sid, credential) in enumerate(sessions):
        n = index % segments
        rendition = RENDITIONS[index % len(RENDITIONS)]
        paths.append(f"{prefix}/playback/sessions/{sid}/{credential}/{rendition}/seg_{n:05d}.ts")
    return paths


def check_answers(s: dict[str, Any], paths: list[str], via: list[str]) -> dict[str, Any]:
    """One request of each kind by hand: the redirect really is a presigned URL of the segment."""
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        direct = client.get(s["service_url"] + paths[0])
        gateway = client.get(s["gateway_url"] + via[0])
    for response in (direct, gateway):
        if response.status_code != 302 or "X-Amz-Signature" not in response.headers.get("location", ""):
            raise RuntimeError(f"expected a presigned redirect, got {response.status_code}: {response.text}")
    return {"status": gateway.status_code, "location_sample": gateway.headers["location"][:120] + "..."}


def closed_loop(
    s: dict[str, Any], targets: dict[str, tuple[str, list[str]]], args: argparse.Namespace
) -> Any:
    """Each target in turn, ``--rounds`` times; medians, with CPU per request of both processes."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (base, target_paths) in targets.items():
            service_cpu, gateway_cpu = s["service"].tree_cpu_s(), s["gateway"].tree_cpu_s()
            run = load(base, target_paths, seconds=args.seconds, connections=args.connections)
            run["service_cpu_us_per_request"] = round(
                (s["service"].tree_cpu_s() - service_cpu) / max(1, run["requests"]) * 1e6, 1
            )
            if name.startswith("gateway"):
                run["gateway_cpu_us_per_request"] = round(
                    (s["gateway"].tree_cpu_s() - gateway_cpu) / max(1, run["requests"]) * 1e6, 1
                )
            runs[name].append(run)
    return {
        name: {
            **{
                key: statistics.median(run[key] for run in rounds)
                for key in rounds[0]
                if isinstance(rounds[0][key], int | float)
            },
            "rounds_req_s": [run["req_s"] for run in rounds],
        }
        for name, rounds in runs.items()
    }


def paced(targets: dict[str, tuple[str, list[str]]], rate: float, args: argparse.Namespace) -> Any:
    """p50/p99 at ``rate`` req/s offered (as many independent players would), per target."""
    out: dict[str, Any] = {}
    for name, (base, target_paths) in targets.items():
        delay_ms = calibrate_delay(base, target_paths, rate=rate)
        rounds = [
            load(base, target_paths, seconds=args.seconds, connections=PACED_CONNECTIONS, delay_ms=delay_ms)
            for _ in range(args.rounds)
        ]
        out[name] = {
            "offered_req_s": rate,
            "req_s": statistics.median(r["req_s"] for r in rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "rounds_p99_ms": [r["p99_ms"] for r in rounds],
            "status_4xx_5xx": sum(r["status_4xx_5xx"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
        }
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix="bench-segments-"))
    result: dict[str, Any] = {
        "client": "wrk" if shutil.which("wrk") else "python-aiohttp",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "hot_sessions": args.hot_sessions,
        "cold_sessions": args.cold_sessions,
        "segments_per_rendition": args.segments,
        "connections": args.connections,
        "seconds_per_run": args.seconds,
        "edge_limits_on_segments": args.edge_limits,
    }
    with stack(args, logdir) as s:
        sessions = s["sessions"]
        hot, cold = sessions[: args.hot_sessions], sessions[: args.cold_sessions]
        service, gateway = s["service_url"], s["gateway_url"]
        result["sample"] = check_answers(
            s, hot_paths(hot, args.segments), hot_paths(hot, args.segments, prefix="/api/v1")
        )
        targets = {
            "direct_healthz": (service, ["/healthz"]),
            "direct_segment_hot": (service, hot_paths(hot, args.segments)),
            "direct_segment_cold": (service, cold_paths(cold, args.segments)),
            "gateway_healthz": (gateway, ["/api/v1/healthz"]),
            "gateway_segment_hot": (gateway, hot_paths(hot, args.segments, prefix="/api/v1")),
            "gateway_segment_cold": (gateway, cold_paths(cold, args.segments, prefix="/api/v1")),
        }
        for base, target_paths in targets.values():  # warm-up: presigned URLs, keep-alive pools
            load(base, target_paths, seconds=2, connections=args.connections)
        result["closed_loop"] = loops = closed_loop(s, targets, args)
        if args.rate:
            via = {name: target for name, target in targets.items() if name.startswith("gateway")}
            result["paced"] = paced(via, args.rate, args)
        healthz = loops["gateway_healthz"]["req_s"]
        result["verdict"] = {
            "target_redirects_s": 3000,
            "target_p99_ms": 20,
            **{
                f"{kind}_gateway_redirects_s": loops[f"gateway_segment_{kind}"]["req_s"]
                for kind in ("hot", "cold")
            },
            **{
                f"{kind}_vs_healthz_through_gateway": round(
                    loops[f"gateway_segment_{kind}"]["req_s"] / healthz, 3
                )
                for kind in ("hot", "cold")
            },
            **{
                f"{kind}_gateway_p99_ms_at_{args.rate:g}_req_s": result.get("paced", {})
                .get(f"gateway_segment_{kind}", {})
                .get("p99_ms")
                for kind in ("hot", "cold")
            },
        }
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["logs"] = str(logdir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load run (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--hot-sessions", type=int, default=64, help="sessions of the cached-state runs")
    parser.add_argument(
        "--cold-sessions", type=int, default=30_000, help="sessions of the state-from-Redis runs"
    )
    parser.add_argument("--segments", type=int, default=50, help="segments per rendition")
    parser.add_argument(
        "--rate", type=float, default=3000.0, help="offered req/s of the paced runs (0 skips)"
    )
    parser.add_argument(
        "--edge-limits",
        action="store_true",
        help="comparison: segment routes keep the default class's per-IP limit (a Redis call per request)",
    )
    parser.add_argument(
        "--service-app", default="services.streaming.app:create_app", help="uvicorn factory of the service"
    )
    parser.add_argument("--save", action="store_true", help="also write bench/results/segments.json")
    args = parser.parse_args()
    result = measure(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "segments.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
