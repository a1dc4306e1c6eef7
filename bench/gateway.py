"""Gateway overhead, side by side in one run with the same load client; prints one JSON document.

What it measures (127.0.0.1 only, every run bounded in time):

1. req/s of a trivial endpoint straight from a service vs through the gateway with edge JWT
   verification and rate limiting on (the token is a real one, the limits are high enough not
   to refuse, so every request still pays for the check); ratio gateway/direct.
2. p99 latency at a fixed rate of half the direct req/s, direct vs through the gateway; the
   difference is what the gateway adds.
3. A 1 GiB upload and a 1 GiB download through the gateway: MB/s and the gateway's RSS growth.

The upstream is the real auth service (its /healthz; token from register + login) when it can
start, else the catalog skeleton with a token minted here and a JWKS served by this script.
The load client is wrk when installed (``apt-get install wrk``), else a Python asyncio client.
This script installs nothing.

    .venv/bin/python bench/gateway.py [--seconds 10] [--workers 1] [--upstream auto|auth|catalog]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psutil
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from bench.wrk import WRK_DONE, paced_delay  # noqa: E402
from common.db import ensure_database  # noqa: E402
from common.migrations import upgrade  # noqa: E402
from streamify.embedded import free_port  # noqa: E402

PYTHON = sys.executable
PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
GIB = 1024**3
UVICORN_FLAGS = ["--loop", "uvloop", "--no-access-log", "--no-server-header"]
# The services run on uvicorn's httptools protocol; the gateway on its corked subclass (gateway.server).
SERVICE_HTTP = "httptools"
GATEWAY_HTTP = "gateway.server:GatewayHttpProtocol"


class Process:
    """A child process with its output in a file; stopped (and waited for) on exit."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def tree_cpu_s(self) -> float:
        procs = [self.ps, *self.ps.children(recursive=True)]
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def tree_rss(self) -> int:
        total = 0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def wait_ready(url: str, proc: Process, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {proc.log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(
                ("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])), timeout=0.5
            ):
                pass
            import urllib.request

            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url}: {proc.log_path.read_text()[-3000:]}")


def uvicorn(
    target: str, port: int, *, factory: bool = True, workers: int = 1, http: str = SERVICE_HTTP
) -> list[str]:
    args = [
        PYTHON,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        http,
        *UVICORN_FLAGS,
    ]
    if factory:
        args.append("--factory")
    if workers > 1:
        args += ["--workers", str(workers)]
    return args


# -- JWKS + token for the catalog fallback --------------------------------------------------------
class JWKSServer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"bench-{uuid.uuid4().hex[:8]}"
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "role": "viewer",
            "jti": uuid.uuid4().hex,
            "iss": "streamify-auth",
            "aud": "streamify",
            "typ": "access",
            "iat": now,
            "exp": now + 1800,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


# -- load clients -------------------------------------------------------------------------------
def run_wrk(
    url: str, token: str, *, seconds: float, connections: int, delay_ms: float | None
) -> dict[str, Any]:
    script = WRK_DONE + (paced_delay(delay_ms) if delay_ms is not None else "")
    headers = [f"Authorization: Bearer {token}"] if token else []
    return wrk.run_wrk(url, script, seconds=seconds, connections=connections, headers=headers)


async def _python_load(
    url: str, token: str, *, seconds: float, connections: int, delay_ms: float | None
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    non_2xx = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal errors, non_2xx
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        if response.status >= 300:
                            non_2xx += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)

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


def load(
    url: str, token: str, *, seconds: float, connections: int, delay_ms: float | None = None
) -> dict[str, Any]:
    if shutil.which("wrk"):
        return run_wrk(url, token, seconds=seconds, connections=connections, delay_ms=delay_ms)
    return asyncio.run(_python_load(url, token, seconds=seconds, connections=connections, delay_ms=delay_ms))


PACED_CONNECTIONS = 48


def calibrate_delay(url: str, token: str, *, rate: float) -> float:
    """The per-connection mean pause (ms) that makes PACED_CONNECTIONS offer ~``rate`` req/s."""
    delay_ms = PACED_CONNECTIONS * 1000 / rate
    for _ in range(2):
        probe = load(url, token, seconds=3, connections=PACED_CONNECTIONS, delay_ms=delay_ms)
        delay_ms = max(0.1, delay_ms * probe["req_s"] / rate)
    return delay_ms


# -- the big-body runs --------------------------------------------------------------------------
class RSSSampler:
    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.baseline = proc.tree_rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.tree_rss())

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return round((self.peak - self.baseline) / 2**20, 1)


async def _upload(url: str, size: int) -> float:
    chunk = b"\0" * (1024 * 1024)

    async def body() -> Any:
        sent = 0
        while sent < size:
            part = chunk if size - sent >= len(chunk) else chunk[: size - sent]
            sent += len(part)
            yield part

    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body(), headers={"Content-Length": str(size)}) as response,
    ):
        data = await response.json()
        assert response.status == 200 and data["received"] == size, (response.status, data)
    return time.perf_counter() - started


async def _download(url: str, size: int) -> float:
    started = time.perf_counter()
    received = 0
    async with aiohttp.ClientSession(read_bufsize=2**20) as session, session.get(url) as response:
        assert response.status == 200, response.status
        async for part in response.content.iter_chunked(2**20):
            received += len(part)
    assert received == size, received
    return time.perf_counter() - started


def big_bodies(gateway_url: str, gateway: Process, echo_url: str, size: int) -> dict[str, Any]:
    """1 GiB up and down through the gateway (RSS sampled), and straight to the upstream for scale."""
    result: dict[str, Any] = {"bytes": size}
    elapsed = asyncio.run(_upload(f"{echo_url}/uploads/bench?op=sink", size))
    result["direct_upload_mb_s"] = round(size / elapsed / 1e6, 1)
    elapsed = asyncio.run(_download(f"{echo_url}/videos/bench?op=bytes&n={size}", size))
    result["direct_download_mb_s"] = round(size / elapsed / 1e6, 1)
    with RSSSampler(gateway) as up_rss:
        elapsed = asyncio.run(_upload(f"{gateway_url}/api/v1/uploads/bench?op=sink", size))
    result["upload_mb_s"] = round(size / elapsed / 1e6, 1)
    result["upload_rss_growth_mib"] = up_rss.growth_mib
    with RSSSampler(gateway) as down_rss:
        elapsed = asyncio.run(_download(f"{gateway_url}/api/v1/videos/bench?op=bytes&n={size}", size))
    result["download_mb_s"] = round(size / elapsed / 1e6, 1)
    result["download_rss_growth_mib"] = down_rss.growth_mib
    result["gateway_rss_mib"] = round(gateway.tree_rss() / 2**20, 1)
    return result


# -- set-up ------------------------------------------------------------------------------------
async def _auth_token(base_url: str) -> str:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery staple " + uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/auth/register", json={"email": email, "password": password, "display_name": "Bench"}
        ) as response:
            assert response.status == 201, await response.text()
        async with session.post(
            f"{base_url}/auth/login", json={"email": email, "password": password}
        ) as response:
            assert response.status == 200, await response.text()
            token: str = (await response.json())["access_token"]
            return token


@contextlib.contextmanager
def stack(args: argparse.Namespace, logdir: Path) -> Iterator[dict[str, Any]]:
    procs: list[Process] = []
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "REDIS_URL": REDIS_URL,
        "LOG_LEVEL": "INFO",
        "INTERNAL_SECRET": f"bench-internal-{uuid.uuid4().hex}",
    }
    try:
        service_port, echo_port, gateway_port = free_port(), free_port(), free_port()
        upstream = args.upstream
        token = ""
        service_env = dict(env)
        if upstream in ("auto", "auth"):
            try:
                db = f"{PG_BASE}/streamify_bench_auth"
                asyncio.run(ensure_database(db))
                upgrade("services.auth", db)
                service_env |= {
                    "AUTH_DATABASE_URL": db,
                    "AUTH_ARGON2_TIME_COST": "1",
                    "AUTH_ARGON2_MEMORY_COST_KIB": "8192",
                    "AUTH_ARGON2_PARALLELISM": "1",
                }
                service = Process(
                    "auth", uvicorn("services.auth.app:create_app", service_port), service_env, logdir
                )
                procs.append(service)
                wait_ready(f"http://127.0.0.1:{service_port}/readyz", service)
                token = asyncio.run(_auth_token(f"http://127.0.0.1:{service_port}"))
                upstream = "auth"
                jwks_url = f"http://127.0.0.1:{service_port}/.well-known/jwks.json"
            except Exception as exc:
                if args.upstream == "auth":
                    raise
                print(f"auth service unavailable ({exc!r}); benchmarking against catalog", file=sys.stderr)
                for proc in procs:
                    proc.stop()
                procs.clear()
                upstream = "catalog"
        if upstream == "catalog":
            jwks = JWKSServer()
            jwks_url = jwks.url
            token = jwks.token()
            db = f"{PG_BASE}/streamify_bench_catalog"
            asyncio.run(ensure_database(db))
            upgrade("services.catalog", db)
            service_env |= {"CATALOG_DATABASE_URL": db, "JWKS_URL": jwks_url}
            service = Process(
                "catalog", uvicorn("services.catalog.app:create_app", service_port), service_env, logdir
            )
            procs.append(service)
            wait_ready(f"http://127.0.0.1:{service_port}/readyz", service)

        echo = Process(
            "echo",
            uvicorn("tests.gateway.upstream_app:application", echo_port, factory=False),
            {**env, "UPSTREAM_NAME": "echo"},
            logdir,
        )
        procs.append(echo)
        service_url = f"http://127.0.0.1:{service_port}"
        echo_url = f"http://127.0.0.1:{echo_port}"
        gateway_env = {
            **env,
            "JWKS_URL": jwks_url,
            "GATEWAY_UPSTREAMS": json.dumps(
                {
                    "auth": [service_url if upstream == "auth" else echo_url],
                    "catalog": [echo_url],
                    "streaming": [echo_url],
                    "billing": [echo_url],
                    "analytics": [echo_url],
                    "bench": [service_url],
                }
            ),
            # The trivial endpoint, through the gateway: /api/v1/healthz -> the service's /healthz.
            "GATEWAY_ROUTES": json.dumps({"/api/v1/healthz": "bench"}),
            # Limits high enough never to refuse: every request still runs the Redis check.
            "GATEWAY_ROUTE_CLASSES": json.dumps(
                {"default": {"rate_ip": "1000000000/hour", "rate_user": "1000000000/hour"}}
            ),
        }
        if args.no_edge_checks:
            # For comparison only: no token, no rate limiting, so no Redis round trip per request.
            gateway_env["GATEWAY_RATE_LIMIT_ENABLED"] = "false"
        gateway_args = [
            *uvicorn("gateway.app:create_app", gateway_port, workers=args.workers, http=args.gateway_http),
            "--no-proxy-headers",
        ]
        gateway = Process("gateway", gateway_args, gateway_env, logdir)
        procs.append(gateway)
        wait_ready(f"{echo_url}/readyz", echo)
        wait_ready(f"http://127.0.0.1:{gateway_port}/healthz", gateway)
        yield {
            "upstream": upstream,
            "token": "" if args.no_edge_checks else token,
            "service": procs[0],
            "gateway": gateway,
            "direct_url": f"{service_url}/healthz",
            "gateway_url": f"http://127.0.0.1:{gateway_port}",
            "echo_url": echo_url,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def throughput(
    direct_url: str, via_url: str, token: str, service: Process, gateway: Process, args: argparse.Namespace
) -> dict[str, Any]:
    """Closed-loop req/s, direct and through the gateway, alternating; plus CPU per request of the
    service (direct runs) and of the gateway (gateway runs): unlike req/s, CPU time per request
    hardly depends on what else the shared machine is doing."""
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        cpu_before = service.tree_cpu_s()
        direct = load(direct_url, token, seconds=args.seconds, connections=args.connections)
        direct["service_cpu_us_per_request"] = round(
            (service.tree_cpu_s() - cpu_before) / max(1, direct["requests"]) * 1e6, 1
        )
        cpu_before = gateway.tree_cpu_s()
        via = load(via_url, token, seconds=args.seconds, connections=args.connections)
        cpu_used = gateway.tree_cpu_s() - cpu_before
        via["gateway_cpu_us_per_request"] = round(cpu_used / max(1, via["requests"]) * 1e6, 1)
        rounds.append({"direct": direct, "gateway": via, "ratio": round(via["req_s"] / direct["req_s"], 3)})
    direct_req_s = statistics.median(r["direct"]["req_s"] for r in rounds)
    gateway_req_s = statistics.median(r["gateway"]["req_s"] for r in rounds)
    return {
        "direct_req_s": direct_req_s,
        "gateway_req_s": gateway_req_s,
        "ratio": round(gateway_req_s / direct_req_s, 3),
        "median_round_ratio": statistics.median(r["ratio"] for r in rounds),
        "service_cpu_us_per_request": statistics.median(
            r["direct"]["service_cpu_us_per_request"] for r in rounds
        ),
        "gateway_cpu_us_per_request": statistics.median(
            r["gateway"]["gateway_cpu_us_per_request"] for r in rounds
        ),
        "target_ratio": 0.5,
        "rounds": rounds,
    }


def latency(
    direct_url: str, via_url: str, token: str, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """p99 at ``rate`` req/s, direct vs through the gateway.

    Many connections each pause a random time between requests (wrk measures each request's
    latency from its send), calibrated per target so both carry the same request rate; direct
    and gateway runs then alternate and the median of the per-pair differences is reported
    (p99 on a shared 2-core machine is noisy; pairing cancels slow phases that hit both).
    """
    direct_delay = calibrate_delay(direct_url, token, rate=rate)
    via_delay = calibrate_delay(via_url, token, rate=rate)
    pairs = []
    for _ in range(args.rounds):
        direct = load(
            direct_url, token, seconds=args.seconds, connections=PACED_CONNECTIONS, delay_ms=direct_delay
        )
        via = load(via_url, token, seconds=args.seconds, connections=PACED_CONNECTIONS, delay_ms=via_delay)
        pairs.append(
            {
                "direct": direct,
                "gateway": via,
                "added_p99_ms": round(via["p99_ms"] - direct["p99_ms"], 3),
                "added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
            }
        )
    return {
        "target_req_s": round(rate, 1),
        "connections": PACED_CONNECTIONS,
        "added_p99_ms": statistics.median(p["added_p99_ms"] for p in pairs),
        "added_p50_ms": statistics.median(p["added_p50_ms"] for p in pairs),
        "target_added_p99_ms": 5.0,
        "pairs": pairs,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    result: dict[str, Any] = {
        "client": "wrk" if shutil.which("wrk") else "python-aiohttp",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gateway_workers": args.workers,
        "gateway_http_protocol": args.gateway_http,
        "edge_checks": not args.no_edge_checks,
        "connections": args.connections,
        "seconds_per_run": args.seconds,
    }
    with stack(args, logdir) as s:
        token, gateway = s["token"], s["gateway"]
        direct_url, via_url = s["direct_url"], f"{s['gateway_url']}/api/v1/healthz"
        result["upstream"] = s["upstream"]
        result["endpoint"] = {
            "direct": "GET /healthz",
            "gateway": "GET /api/v1/healthz (Bearer token verified, rate limited)",
        }
        if args.rounds:
            # Warm up both paths (JWKS fetch, token cache, keep-alive pools, script load).
            load(direct_url, token, seconds=2, connections=args.connections)
            load(via_url, token, seconds=2, connections=args.connections)
            result["throughput"] = throughput(direct_url, via_url, token, s["service"], gateway, args)
            rate = result["throughput"]["direct_req_s"] / 2
            result["latency_at_half_load"] = latency(direct_url, via_url, token, rate, args)
        if args.big_bytes:
            result["big_bodies"] = big_bodies(s["gateway_url"], gateway, s["echo_url"], args.big_bytes)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["logs"] = str(logdir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="direct/gateway pairs per measurement (0: bodies only)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="gateway uvicorn workers")
    parser.add_argument(
        "--gateway-http",
        default=GATEWAY_HTTP,
        help="uvicorn --http for the gateway (httptools = stock uvicorn)",
    )
    parser.add_argument(
        "--no-edge-checks",
        action="store_true",
        help="comparison run: anonymous requests, rate limiting off (no Redis round trip)",
    )
    parser.add_argument("--upstream", choices=("auto", "auth", "catalog"), default="auto")
    parser.add_argument("--big-bytes", type=int, default=GIB, help="size of the up/down body runs (0 skips)")
    args = parser.parse_args()
    print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
