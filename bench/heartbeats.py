"""Sustained playback heartbeats through the gateway with charging on; prints one JSON document.

Starts `streamify up` on free ports (its own data directory and databases, dropped afterwards)
with short units (BILLING_UNIT_SECONDS=1 by default) and rate limits raised for one load client on
one IP. A creator uploads a small paid clip; V viewers top up, each opens up to 3 sessions; then
every session beats as fast as its answers come back (a closed loop of S concurrent players),
reporting the position an honest player would have reached (wall-clock time since its start), so
each session is charged one unit per unit of wall time. Measured:

- heartbeats/s and p50/p99 latency through the gateway over ``--seconds`` (after a 5 s warm-up);
- charges made (units billed) and the charge rate;
- the event bus meanwhile: analytics's consumer lag (its /metrics, sampled every 0.5 s; issue 5
  wants it under 5 s) and the events it handled per second;
- a baseline in the same run with the same client: GET /healthz of the streaming service straight
  from uvicorn (the ratio says how much of a trivial endpoint's rate the heartbeat path keeps);

then every session is ended and the money is checked: each viewer's wallet = top-up minus what its
sessions report charged, the creator's earnings = the share of every unit, and
`streamify billing verify` passes. Targets (issue 4): >= 1,500 heartbeats/s, p99 <= 100 ms.

With wrk (``apt-get install wrk``) the load comes from wrk, twice: a closed loop (each session's
next heartbeat leaves when its answer is back: the path's capacity, latency is then queueing by
construction) and paced runs at ``--rates`` (heartbeats leave on one fixed schedule whatever the
answers do, as many players' timers would: the latency a player sees at that load; the target
is met when the offered 1,500/s are answered with p99 <= 100 ms). Without wrk, an aiohttp closed
loop in this process runs instead (it costs ~220 µs of CPU per heartbeat, taken from the stack).

    .venv/bin/python bench/heartbeats.py [--viewers 60] [--seconds 15] [--unit-s 1] [--rates 1000,1500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import RESULTS, Up, port_range  # noqa: E402
from bench.wrk import WRK_DONE, run_wrk  # noqa: E402
from tests.media import make_video  # noqa: E402

PASSWORD = "bench-heartbeat-canyon-47"
PRICE = 5
FEE_BPS = 2000
TOPUP = 50_000
SESSIONS_PER_VIEWER = 3
WARMUP_S = 5.0
TARGET_RATE = 1500  # issue 4: sustained heartbeats/s through the gateway with charging on
TARGET_P99_MS = 100


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sign_up(http: httpx.Client, label: str) -> str:
    email = f"bench-{label}-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": label}
    http.post("/api/v1/auth/register", json=body).raise_for_status()
    login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    return str(login.json()["access_token"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _paid_video(http: httpx.Client, workdir: Path) -> tuple[str, str]:
    """A creator and a ready paid video of theirs."""
    email = f"bench-creator-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": "Creator"}
    http.post("/api/v1/auth/register", json=body).raise_for_status()
    login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    http.post(
        "/api/v1/users/me/channel",
        json={"channel_name": f"Bench {email[:16]}"},
        headers=_auth(login["access_token"]),
    ).raise_for_status()
    token = http.post("/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}).json()[
        "access_token"
    ]
    video = http.post(
        "/api/v1/videos", json={"title": "Bench film", "price_per_minute": PRICE}, headers=_auth(token)
    ).json()
    clip = make_video(workdir / "clip.mp4", size="426x240", seconds=4, rate=24)
    with clip.open("rb") as data:
        http.put(
            f"/api/v1/videos/{video['id']}/source",
            content=data,
            headers={**_auth(token), "Content-Type": "video/mp4"},
        ).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = http.get(f"/api/v1/videos/{video['id']}", headers=_auth(token)).json()["status"]
        if status == "ready":
            return token, str(video["id"])
        if status == "failed":
            raise RuntimeError("the bench clip failed to transcode")
        time.sleep(0.5)
    raise RuntimeError("the bench clip did not become ready")


class Player:
    def __init__(self, token: str, session: dict[str, Any]) -> None:
        self.token = token
        self.session_id = str(session["session_id"])
        self.started = time.monotonic()
        self.last: dict[str, Any] = session


async def _closed_loop(
    http: aiohttp.ClientSession, url_of: Any, body_of: Any, headers_of: Any, n: int, seconds: float
) -> tuple[int, list[float], int]:
    """``n`` concurrent loops for ``seconds``: (requests done, latencies in ms, failures)."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.monotonic() + seconds

    async def loop(i: int) -> None:
        nonlocal failures
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            body = body_of(i)
            method = http.post if body is not None else http.get
            async with method(url_of(i), json=body, headers=headers_of(i)) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(loop(i) for i in range(n)))
    return len(latencies), latencies, failures


# Lua for wrk: every request is the next session's heartbeat (round robin), with the position an
# honest player reports, wall-clock time since the session started (CLOCK_MONOTONIC, the clock of
# Python's time.monotonic, read through LuaJIT's FFI). With ``rate``, delay() spaces the sends on
# one schedule of ``rate`` a second for the whole client (an open loop: a slow answer does not
# delay the next heartbeat while a connection is free), as independent players' timers would.
_WRK_HEARTBEATS = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } timespec_t; int clock_gettime(int, timespec_t *); ]]
local ts = ffi.new("timespec_t")
local function now() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9 end
local sessions = {%(sessions)s}
local i = 0
request = function()
  i = i %% #sessions + 1
  local s = sessions[i]
  local body = string.format('{"position_s": %%.3f, "state": "playing"}', now() - s[3])
  return wrk.format("POST", "/api/v1/playback/sessions/" .. s[1] .. "/heartbeat",
    {["Authorization"] = "Bearer " .. s[2], ["Content-Type"] = "application/json"}, body)
end
local rate = %(rate)s
local next_at = nil
if rate > 0 then
  delay = function()
    local t = now()
    next_at = (next_at or t) + 1 / rate
    local wait = (next_at - t) * 1000
    if wait < 0 then return 0 end
    return wait
  end
end
"""


def _wrk_heartbeats(players: list[Player], rate: float = 0.0) -> str:
    sessions = ",".join(f'{{"{p.session_id}","{p.token}",{p.started:.6f}}}' for p in players)
    return _WRK_HEARTBEATS % {"sessions": sessions, "rate": f"{rate:.1f}"} + WRK_DONE


async def _baseline(url: str, concurrency: int, use_wrk: bool) -> dict[str, Any]:
    """A trivial endpoint of the same service, straight from uvicorn, with the same client."""
    if use_wrk:
        figures = await asyncio.to_thread(run_wrk, url, WRK_DONE, seconds=5, connections=concurrency)
        return {"requests_per_s": figures["req_s"], "p99_ms": figures["p99_ms"]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        done, lat, _ = await _closed_loop(http, lambda i: url, lambda i: None, lambda i: {}, concurrency, 5)
    return {"requests_per_s": round(done / 5, 1), "p99_ms": round(_percentile(lat, 0.99), 2)}


async def _bus_lag(http: aiohttp.ClientSession, metrics_url: str) -> tuple[float, float, float]:
    """Analytics's consumer lag (seconds, events) and events handled so far, from its /metrics."""
    async with http.get(metrics_url) as response:
        text = await response.text()
    values = {"streamify_events_consumer_lag_seconds": 0.0, "streamify_events_consumer_lag_events": 0.0}
    consumed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("group") != "analytics":
                continue
            if sample.name in values:
                values[sample.name] = max(values[sample.name], sample.value)
            elif sample.name == "streamify_events_consumed_total":
                consumed += sample.value
    return (
        values["streamify_events_consumer_lag_seconds"],
        values["streamify_events_consumer_lag_events"],
        consumed,
    )


async def _watch_lag(
    http: aiohttp.ClientSession, metrics_url: str, stop: asyncio.Event
) -> list[tuple[float, ...]]:
    samples: list[tuple[float, ...]] = []
    while not stop.is_set():
        samples.append(await _bus_lag(http, metrics_url))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return samples


async def _drive(
    up: Up, players: list[Player], seconds: float, rates: list[float], use_wrk: bool
) -> dict[str, Any]:
    def body(i: int) -> dict[str, Any]:
        player = players[i]
        return {"position_s": round(time.monotonic() - player.started, 3), "state": "playing"}

    def url(i: int) -> str:
        return f"{up.url}/api/v1/playback/sessions/{players[i].session_id}/heartbeat"

    headers = [_auth(p) for p in (player.token for player in players)]
    process = psutil.Process()

    async def load(http: aiohttp.ClientSession, duration: float, paced_at: float) -> dict[str, Any]:
        if use_wrk:
            figures = await asyncio.to_thread(
                run_wrk,
                f"{up.url}/",
                _wrk_heartbeats(players, paced_at),
                seconds=duration,
                connections=len(players) if not paced_at else max(len(players), 256),
            )
            return {
                "heartbeats": figures["requests"],
                "failures": figures["errors"] + figures["non_2xx"],
                "p50_ms": figures["p50_ms"],
                "p99_ms": figures["p99_ms"],
                "max_ms": figures["max_ms"],
            }
        done, lat, failures = await _closed_loop(
            http, url, body, lambda i: headers[i], len(players), duration
        )
        return {
            "heartbeats": done,
            "failures": failures,
            "p50_ms": round(_percentile(lat, 0.50), 2),
            "p99_ms": round(_percentile(lat, 0.99), 2),
            "max_ms": round(max(lat, default=0.0), 2),
        }

    async def measured(http: aiohttp.ClientSession, paced_at: float) -> dict[str, Any]:
        cpu_before, stack_before = process.cpu_times(), up.cpu_seconds()
        started = time.monotonic()
        figures = await load(http, seconds, paced_at)
        elapsed = time.monotonic() - started
        cpu_after, stack_after = process.cpu_times(), up.cpu_seconds()
        done = max(figures["heartbeats"], 1)
        client = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        figures["heartbeats_per_s"] = round(figures["heartbeats"] / elapsed, 1)
        figures["load_client_cpu_cores"] = None if use_wrk else round(client / elapsed, 2)
        # Where the CPU goes: microseconds of each part's CPU per heartbeat answered.
        figures["cpu_us_per_heartbeat"] = {
            name: round((stack_after[name] - stack_before.get(name, 0.0)) / done * 1e6)
            for name in sorted(stack_after)
        }
        figures["stack_cpu_us_per_heartbeat"] = sum(figures["cpu_us_per_heartbeat"].values())
        return figures

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # Warm-up: sessions opened during set-up start with several units due; settle them first.
        await load(http, WARMUP_S, 0.0)
        metrics_url = f"{up.service_url('analytics')}/metrics"
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_lag(http, metrics_url, stop))
        consumed_before = (await _bus_lag(http, metrics_url))[2]
        started = time.monotonic()
        result: dict[str, Any] = {"client": "wrk" if use_wrk else "aiohttp"}
        result["closed_loop"] = await measured(http, 0.0)
        if use_wrk:
            result["paced"] = []
            for offered in rates:
                paced = await measured(http, offered)
                paced["offered_per_s"] = offered
                paced["target_met"] = (
                    offered >= TARGET_RATE
                    and paced["heartbeats_per_s"] >= 0.98 * offered
                    and paced["p99_ms"] <= TARGET_P99_MS
                )
                result["paced"].append(paced)
        elapsed = time.monotonic() - started
        stop.set()
        lag = await watcher
        consumed_after = (await _bus_lag(http, metrics_url))[2]
    # Issue 5: the analytics consumer keeps up with the bus while heartbeats and charges flow.
    result["event_bus"] = {
        "max_lag_s": round(max((x[0] for x in lag), default=0.0), 2),
        "max_lag_events": int(max((x[1] for x in lag), default=0.0)),
        "analytics_events_per_s": round((consumed_after - consumed_before) / elapsed, 1),
        "samples": len(lag),
    }
    return result


def run(viewers: int, seconds: float, unit_s: float, rates: list[float], use_wrk: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-heartbeats-"))
    prefix = f"streamify_benchhb_{uuid.uuid4().hex[:6]}"
    up = Up(
        workdir / "data",
        port_range(),
        prefix,
        env={
            "BILLING_UNIT_SECONDS": str(unit_s),
            # Sessions are opened one after another before the load starts: the default interval
            # (sessions end after three missed ones) keeps the first ones alive meanwhile.
            "HEARTBEAT_INTERVAL_SECONDS": "10",
            "AUTH_LOGIN_RATE_PER_IP": "100000/minute",
            "AUTH_LOGIN_RATE_PER_ACCOUNT": "100000/minute",
            # One load client on one IP plays every viewer: the limits stay on (the Redis round trip
            # is part of the measured path) but high enough not to refuse it.
            "GATEWAY_ROUTE_CLASSES": json.dumps(
                {
                    "default": {"rate_ip": "10000000/minute", "rate_user": "1000000/minute"},
                    "auth": {"rate_ip": "100000/minute", "rate_user": None, "max_body_bytes": 65536},
                }
            ),
        },
    )
    result: dict[str, Any] = {"viewers": viewers, "unit_s": unit_s, "seconds": seconds, "price": PRICE}
    try:
        result["startup_s"] = round(up.start(), 1)
        with httpx.Client(base_url=up.url, timeout=60) as http:
            creator_token, video_id = _paid_video(http, workdir)
            players: list[Player] = []
            tokens = [_sign_up(http, f"viewer{i}") for i in range(viewers)]
            concurrency = viewers * SESSIONS_PER_VIEWER
            result["baseline_streaming_healthz"] = asyncio.run(
                _baseline(f"{up.service_url('streaming')}/healthz", concurrency, use_wrk)
            )
            for token in tokens:
                http.post(
                    "/api/v1/wallet/topups",
                    json={"amount": TOPUP, "payment_method": "test_card"},
                    headers={**_auth(token), "Idempotency-Key": uuid.uuid4().hex},
                ).raise_for_status()
                for _ in range(SESSIONS_PER_VIEWER):
                    started = http.post(
                        "/api/v1/playback/sessions", json={"video_id": video_id}, headers=_auth(token)
                    )
                    started.raise_for_status()
                    players.append(Player(token, started.json()))
            result["sessions"] = len(players)
            loaded_at = time.monotonic()
            result["load_1m_before"] = round(os.getloadavg()[0], 2)
            result.update(asyncio.run(_drive(up, players, seconds, rates, use_wrk)))
            result["ratio_to_baseline"] = round(
                result["closed_loop"]["heartbeats_per_s"]
                / result["baseline_streaming_healthz"]["requests_per_s"],
                2,
            )
            result["load_1m_after"] = round(os.getloadavg()[0], 2)

            # Money check: end every session, then compare wallets and earnings with the sessions.
            charged: dict[str, int] = {}
            billed_units = 0
            for player in players:
                ended = http.post(
                    f"/api/v1/playback/sessions/{player.session_id}/end", headers=_auth(player.token)
                )
                ended.raise_for_status()
                final = ended.json()
                charged[player.token] = charged.get(player.token, 0) + int(final["charged_total"])
                billed_units += int(final["billed_minutes"])
            wrong_wallets = 0
            for token, total in charged.items():
                balance = http.get("/api/v1/wallet", headers=_auth(token)).json()["balance"]
                wrong_wallets += balance != TOPUP - total
            share = PRICE - PRICE * FEE_BPS // 10_000
            earnings = http.get("/api/v1/creator/earnings", headers=_auth(creator_token)).json()["total"]
            result["units_charged"] = billed_units
            result["charges_per_s_overall"] = round(billed_units / (time.monotonic() - loaded_at), 1)
            result["wallets_not_matching_sessions"] = wrong_wallets
            result["creator_earnings_exact"] = earnings == billed_units * share
        verify = up.cli("billing", "verify")
        result["billing_verify_exit"] = verify.returncode
        result["billing_verify"] = verify.stdout.strip()[-2000:]
    finally:
        up.stop()
        asyncio.run(up.drop_databases())
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--unit-s", type=float, default=1.0)
    parser.add_argument(
        "--rates", default="1500", help="heartbeats/s offered in paced runs, comma-separated (wrk only)"
    )
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    result = run(args.viewers, args.seconds, args.unit_s, rates, use_wrk)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"heartbeats-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
