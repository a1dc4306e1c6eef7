"""Charges per second of the billing service; prints one JSON document.

Starts the billing app as `streamify up` runs it (uvicorn, one worker, uvloop, httptools) on a
free port against a fresh database (``streamify_benchbilling_<run>``, created, migrated and
dropped at the end; Redis database 13 for the events), funds ``--viewers`` wallets directly in
the database, then drives ``POST /internal/charges`` with wrk (a Lua script writes each request:
a new key ``<session>:<unit>`` per request, a random funded viewer, a random amount) in two cases:

- ``many_creators``: each charge credits one of ``--creators`` creators, and
- ``hot_creator``: every charge credits the same creator (the case a counter row would serialise),

and, with the same client in the same run, the trivial ``GET /healthz`` as the baseline; the three
alternate for ``--rounds`` rounds and the median round of each is reported. For each: charges/s
(every answer must be 201), p50/p90/p99 latency, the ratio to the baseline, and the service's
own CPU time per request (which other load on the machine inflates less than throughput).
At the end ``verify_ledger`` checks every invariant over everything the run wrote (it must pass)
and the number of charges in the ledger is compared with the 201s wrk counted. Target (issue 4):
>= 2,000 charges/s in both cases.

The load client is wrk (``apt-get install wrk``); without it a slower Python (aiohttp) client
runs, which itself takes a good part of the two cores and understates the service.

    .venv/bin/python bench/billing.py [--seconds 10] [--rounds 3] [--connections 64] [--viewers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import Process, wait_ready  # noqa: E402
from bench.wrk import WRK_DONE, run_wrk  # noqa: E402
from common.db import asyncpg_dsn, drop_database, ensure_database  # noqa: E402
from common.internal import mint_service_token  # noqa: E402
from common.migrations import upgrade  # noqa: E402
from services.billing.service import request_hash  # noqa: E402
from services.billing.verify import verify_ledger  # noqa: E402
from streamify.embedded import free_port  # noqa: E402

PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# The flags `streamify up` gives the services (streamify/stack.py), plus the ones it sets by default.
UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--timeout-graceful-shutdown", "5"]
WALLET_FUNDS = 10**12
TARGET_CHARGES_S = 2000


def charge_script(
    token: str,
    viewers: list[str],
    creators: list[str],
    videos: list[str],
    sessions: list[str],
    batch: int = 0,
) -> str:
    """wrk Lua: every request a new unit of the thread's own session, for a random viewer; with
    ``batch``, every request ``batch`` such units to ``/internal/charges/batch``."""

    def table(values: list[str]) -> str:
        return "{" + ",".join(f'"{value}"' for value in values) + "}"

    return (
        f"""
local viewers = {table(viewers)}
local creators = {table(creators)}
local videos = {table(videos)}
local sessions = {table(sessions)}
local threads = 0
local unit = 0
local headers = {{["Content-Type"] = "application/json", ["X-Service-Token"] = "{token}"}}
local body = '{{"key":"%s:%d","session_id":"%s","unit":%d,"viewer_id":"%s","creator_id":"%s",' ..
             '"video_id":"%s","amount":%d,"currency":"USD"}}'

function setup(thread)
  threads = threads + 1
  thread:set("session", sessions[threads])
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() + seed)
end

local batch = {batch}

local function charge()
  local pick = math.random(#creators)
  local creator = creators[pick]
  local video = videos[pick]
  local viewer = viewers[math.random(#viewers)]
  local amount = math.random(1, 500)
  local payload = string.format(body, session, unit, session, unit, viewer, creator, video, amount)
  unit = unit + 1
  return payload
end

function request()
  if batch == 0 then
    return wrk.format("POST", "/internal/charges", headers, charge())
  end
  local items = {{}}
  for i = 1, batch do items[i] = charge() end
  local payload = '{{"charges":[' .. table.concat(items, ",") .. ']}}'
  return wrk.format("POST", "/internal/charges/batch", headers, payload)
end
"""
        + WRK_DONE
    )


async def python_load(
    url: str,
    *,
    seconds: float,
    connections: int,
    token: str,
    viewers: list[str],
    creators: list[str],
    videos: list[str],
    charges: bool,
) -> dict[str, Any]:
    """The fallback client when wrk is missing (same requests, much more client CPU)."""
    latencies: list[float] = []
    errors = non_2xx = 0
    deadline = time.perf_counter() + seconds
    session = str(uuid.uuid4())
    unit = 0
    headers = {"X-Service-Token": token}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as client:

        async def worker() -> None:
            nonlocal errors, non_2xx, unit
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    if charges:
                        pick = random.randrange(len(creators))
                        body = {
                            "key": f"{session}:{unit}",
                            "session_id": session,
                            "unit": unit,
                            "viewer_id": random.choice(viewers),
                            "creator_id": creators[pick],
                            "video_id": videos[pick],
                            "amount": random.randint(1, 500),
                            "currency": "USD",
                        }
                        unit += 1
                        request = client.post(f"{url}/internal/charges", json=body, headers=headers)
                    else:
                        request = client.get(f"{url}/healthz")
                    async with request as response:
                        await response.read()
                        if response.status >= 300:
                            non_2xx += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 3)

    return {
        "req_s": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "non_2xx": non_2xx,
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (its latencies belong to it)."""
    ordered = sorted(runs, key=lambda run: run["req_s"])
    return dict(ordered[len(ordered) // 2])


async def fund_wallets(database_url: str, viewers: list[str]) -> None:
    """Top up every viewer's wallet straight through the ledger function (no provider needed)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.executemany(
            "SELECT billing_topup($1, $2, $3, $4, 'USD', 'bench', 'bench')",
            [
                (f"topup:bench:{viewer}", request_hash("topup", viewer), uuid.UUID(viewer), WALLET_FUNDS)
                for viewer in viewers
            ],
        )
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers (1, as `streamify up` runs it; more to compare)",
    )
    parser.add_argument("--batch", type=int, default=20, help="charges per batch call (0: single calls only)")
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--creators", type=int, default=1000, help="creators in the many-creators case")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)

    run = uuid.uuid4().hex[:8]
    database_url = f"{PG_BASE.rstrip('/')}/streamify_benchbilling_{run}"
    secret = f"bench-internal-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
    token = mint_service_token(secret, "streaming", ttl_s=3600)
    viewers = [str(uuid.uuid4()) for _ in range(args.viewers)]
    creators = [str(uuid.uuid4()) for _ in range(args.creators)]
    videos = [str(uuid.uuid4()) for _ in range(args.creators)]
    hot_creator, hot_video = str(uuid.uuid4()), str(uuid.uuid4())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {
        "client": "wrk" if use_wrk else "python",
        "seconds": args.seconds,
        "connections": args.connections,
        "viewers": args.viewers,
        "workers": args.workers,
        "cpus": os.cpu_count(),
    }
    logdir = Path(tempfile.mkdtemp(prefix="bench-billing-"))
    asyncio.run(ensure_database(database_url))
    process: Process | None = None
    try:
        upgrade("services.billing", database_url)
        asyncio.run(fund_wallets(database_url, viewers))
        env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "WARNING",
            "INTERNAL_SECRET": secret,
            "REDIS_URL": REDIS_URL,
            "BILLING_DATABASE_URL": database_url,
        }
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "services.billing.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN,
            *(["--workers", str(args.workers)] if args.workers > 1 else []),
        ]
        process = Process("billing", argv, env, logdir)
        wait_ready(f"{url}/readyz", process)

        def load(case: str, creator_ids: list[str], video_ids: list[str], seconds: float) -> dict[str, Any]:
            cpu_before = process.tree_cpu_s()
            measured = _load(case, creator_ids, video_ids, seconds)
            # The service's own CPU per answered request: what the request costs in Python,
            # whatever else shares the machine.
            cpu_s = process.tree_cpu_s() - cpu_before
            measured["billing_cpu_us_per_request"] = round(cpu_s * 1e6 / max(1, measured["requests"]))
            return measured

        def _load(case: str, creator_ids: list[str], video_ids: list[str], seconds: float) -> dict[str, Any]:
            charges = case != "healthz"
            batch = args.batch if case.endswith("_batched") else 0
            if use_wrk:
                if charges:
                    sessions = [str(uuid.uuid4()) for _ in range(args.threads)]
                    script = charge_script(token, viewers, creator_ids, video_ids, sessions, batch)
                    target = url
                else:
                    script, target = WRK_DONE, f"{url}/healthz"
                return run_wrk(
                    target, script, seconds=seconds, connections=args.connections, threads=args.threads
                )
            return asyncio.run(
                python_load(
                    url,
                    seconds=seconds,
                    connections=args.connections,
                    token=token,
                    viewers=viewers,
                    creators=creator_ids,
                    videos=video_ids,
                    charges=charges,
                )
            )

        # Warm-up: connections, prepared statements, the platform and creator accounts.
        load("many_creators", creators, videos, 3)
        load("healthz", [], [], 2)
        # Alternating rounds, median of each: the machine's other load hits every case alike.
        cases = ["many_creators", "hot_creator"]
        if use_wrk and args.batch:
            cases += ["many_creators_batched", "hot_creator_batched"]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ["healthz", *cases]}
        for _ in range(args.rounds):
            rounds["healthz"].append(load("healthz", [], [], args.seconds))
            for name in cases:
                who = ([hot_creator], [hot_video]) if name.startswith("hot") else (creators, videos)
                rounds[name].append(load(name, *who, args.seconds))
        baseline = median_run(rounds["healthz"])
        result["healthz"] = baseline
        result["batch"] = args.batch
        for name in cases:
            case = median_run(rounds[name])
            per_request = args.batch if name.endswith("_batched") else 1
            charges_s = round(case.pop("req_s") * per_request, 1)
            result[name] = {
                "charges_s": charges_s,
                **case,
                "ratio_to_healthz": round(charges_s / max(1.0, baseline["req_s"]), 3),
                "target_met": charges_s >= TARGET_CHARGES_S
                and all(r["non_2xx"] == 0 and r["errors"] == 0 for r in rounds[name]),
                "rounds_charges_s": [round(r["req_s"] * per_request, 1) for r in rounds[name]],
            }
        result["rounds_healthz_req_s"] = [r["req_s"] for r in rounds["healthz"]]
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        verify_started = time.monotonic()
        report = asyncio.run(verify_ledger(database_url))
        result["verify"] = {
            "ok": report.ok,
            "violations": report.violations,
            "counts": report.counts,
            "seconds": round(time.monotonic() - verify_started, 1),
        }
        # wrk counts the answers it read; a request cut off when a run stops may still be charged.
        result["charges_answered"] = sum(
            (r["requests"] - r["non_2xx"]) * (args.batch if name.endswith("_batched") else 1)
            for name in cases
            for r in rounds[name]
        )
        result["cpu_s_billing"] = round(process.tree_cpu_s(), 1)
    finally:
        if process is not None:
            process.stop()
        asyncio.run(drop_database(database_url))
        shutil.rmtree(logdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if not result["verify"]["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
