"""A real `streamify up` for benchmarks: free ports, its own data directory and databases, a log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from common.db import drop_database
from streamify.embedded import free_port_range
from streamify.stack import SERVICES, database_url

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
START_TIMEOUT_S = 90.0
RESULTS = ROOT / "bench" / "results"


def port_range() -> int:
    """A gateway port P with P..P+5 free."""
    return free_port_range(len(SERVICES) + 1)


class Up:
    """`streamify up` in the background, its output kept in a log file next to the data directory."""

    def __init__(
        self, data_dir: Path, port: int, db_prefix: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir, self.port, self.db_prefix = data_dir, port, db_prefix
        self.extra_env = dict(env or {})
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / "up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port + 1 + SERVICES.index(service)}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"ENVIRONMENT", "INTERNAL_SECRET", "LOG_LEVEL", "JWKS_URL"}
            and not key.startswith(("AUTH_", "CATALOG_", "STREAMING_", "BILLING_", "ANALYTICS_", "GATEWAY_"))
        }
        env.update(
            {
                "STREAMIFY_DATABASE_URL": PG_BASE,
                "REDIS_URL": REDIS_URL,
                "STREAMIFY_DB_PREFIX": self.db_prefix,
                "STREAMIFY_TRANSCODERS": "1",
                "STORAGE_BACKEND": "local",
                "LOG_LEVEL": "WARNING",
                **self.extra_env,
            }
        )
        return env

    def start(self) -> float:
        argv = [sys.executable, "-m", "streamify", "up", "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port)]
        started = time.monotonic()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        with httpx.Client(timeout=2) as client:
            while time.monotonic() - started < START_TIMEOUT_S:
                if self.process.poll() is not None:
                    raise RuntimeError(f"streamify up exited:\n{self.log.read_text()[-4000:]}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"streamify up not ready after {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def drop_databases(self) -> None:
        for service in SERVICES:
            await drop_database(database_url(PG_BASE, f"{self.db_prefix}_{service}"))

    def listener(self, port: int) -> psutil.Process:
        """The process (a descendant of `up`) listening on ``port``."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in child.net_connections("tcp")
                ):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        raise RuntimeError(f"nothing of this stack listens on {port}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each part of the stack, and by the machine's PostgreSQL and Redis.

        Parts are named by the port they listen on (gateway, auth, ... analytics); children that
        listen on none (the transcoder, the supervisor) are "other". PostgreSQL and Redis are every
        process of theirs on the machine, so take differences over a run with nothing else going on.
        """
        assert self.process is not None
        names = {self.port: "gateway"} | {self.port + 1 + i: name for i, name in enumerate(SERVICES)}
        totals: dict[str, float] = {}
        supervisor = psutil.Process(self.process.pid)
        for proc in [supervisor, *supervisor.children(recursive=True)]:
            try:
                ports = {c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
                name = next((names[port] for port in ports if port in names), "other")
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            totals[name] = totals.get(name, 0.0) + times.user + times.system
        for proc in psutil.process_iter(["name"]):
            part = {"postgres": "postgresql", "redis-server": "redis"}.get(proc.info["name"] or "")
            if part is None:
                continue
            try:
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            totals[part] = totals.get(part, 0.0) + times.user + times.system
        return totals

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """A `streamify` command against this stack's data directory and databases."""
        argv = [sys.executable, "-m", "streamify", *args, "--data-dir", str(self.data_dir)]
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout_s)
