"""End to end: `streamify up` as a real process tree, used through the gateway like a client would.

Each stack gets free ports, its own data directory, its own databases (``STREAMIFY_DB_PREFIX``, so
neither the dev databases nor the other tests' ``streamify_test_*`` ones are touched) and a Redis
database of its own. The time from launching `streamify up` to the gateway's /readyz answering 200
is printed (the target is under 20 s from a warm install).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from common.db import drop_database
from streamify.embedded import free_port, free_port_range
from streamify.stack import SERVICES, database_url
from tests.conftest import PG_BASE, REDIS_URL, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# The e2e stacks' Redis database: not the dev stack's (0) nor the other tests' (15).
E2E_REDIS_DB = int(os.environ.get("STREAMIFY_E2E_REDIS_DB", "14"))
RUN = uuid.uuid4().hex[:8]
PASSWORD = "plum-orbit-canyon-47"


def _redis_url(db: int) -> str:
    base, _, _ = REDIS_URL.rpartition("/")
    return f"{base}/{db}"


def _port_range() -> int:
    """A gateway port P such that P..P+5 are all free."""
    return free_port_range(len(SERVICES) + 1)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """One `streamify up` subprocess, its output collected line by line."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.data_dir, self.port, self.env = data_dir, port, env
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.ready_after_s: float | None = None

    @property
    def ports(self) -> list[int]:
        return list(range(self.port, self.port + len(SERVICES) + 1))

    def start(self) -> float:
        """Launch it and wait for the gateway's /readyz; the seconds that took."""
        assert self.process is None or self.process.poll() is not None
        self.lines.clear()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamify.cli",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()
        deadline = started + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"streamify up exited with {self.process.returncode}:\n{self.output()}"
                    )
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.ready_after_s = time.monotonic() - started
                        return self.ready_after_s
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"not ready after {START_TIMEOUT_S} s:\n{self.output()}")

    def _collect(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        """The last lines, after the ones that say what went wrong (so a cut report still shows them)."""
        errors = [line for line in self.lines if _says_what_failed(line)]
        head = "errors first:\n" + "".join(errors[-40:]) + "\nthe last lines:\n" if errors else ""
        return head + "".join(self.lines[-200:])

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            _, _, body = line.partition(" | ")
            if body.startswith("{"):
                try:
                    record = json.loads(body)
                except ValueError:
                    continue
                if record.get("event") == event:
                    found.append(record)
        return found

    def child_pids(self) -> dict[str, int]:
        return {str(e["name"]): int(e["pid"]) for e in self.events("process_started")}

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` to `streamify up` and wait for it to exit; its exit code."""
        assert self.process is not None
        pids = self.child_pids()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        self.wait_for_output_end()
        self.assert_everything_stopped(pids)
        return code

    def wait_for_output_end(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.events("process_stopped"):
            time.sleep(0.05)

    def assert_everything_stopped(self, pids: dict[str, int]) -> None:
        assert set(pids) >= {*SERVICES, "gateway", "transcoder-1"}, self.output()
        alive = [name for name, pid in pids.items() if psutil.pid_exists(pid) and not _zombie(pid)]
        assert not alive, f"children still running: {alive}\n{self.output()}"
        listening = [port for port in self.ports if _listening(port)]
        assert not listening, f"ports still open: {listening}\n{self.output()}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _says_what_failed(line: str) -> bool:
    _, _, body = line.partition(" | ")
    if body.startswith("{"):
        return '"level": "error"' in body or '"level": "critical"' in body or "Traceback" in body
    return "Traceback" in line or "Error" in line


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stack_env(
    db_prefix: str, *, database_url_: str = PG_BASE, redis_url: str | None = None
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # The test session's own settings (ENVIRONMENT=test, its secret, ...) are not the stack's.
        if key not in {"ENVIRONMENT", "INTERNAL_SECRET", "REDIS_URL", "LOG_LEVEL", "JWKS_URL"}
        and not key.startswith(("AUTH_", "CATALOG_", "STREAMING_", "BILLING_", "ANALYTICS_", "GATEWAY_"))
    }
    env.update(
        {
            "STREAMIFY_DATABASE_URL": database_url_,
            "REDIS_URL": redis_url or _redis_url(E2E_REDIS_DB),
            "STREAMIFY_DB_PREFIX": db_prefix,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def drop_stack_databases(prefix: str) -> None:
    """Drop every service database a stack made under ``prefix``."""
    for service in SERVICES:
        await drop_database(database_url(PG_BASE, f"{prefix}_{service}"))


@pytest.fixture
async def db_prefix() -> AsyncIterator[str]:
    """Databases of this test's stack, dropped afterwards."""
    prefix = f"streamify_e2e_{RUN}_{uuid.uuid4().hex[:6]}"
    yield prefix
    await drop_stack_databases(prefix)


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    """Every stack a test starts is killed at the end, whatever happened."""
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.kill()


def _report_ready_time(capsys: pytest.CaptureFixture[str], label: str, seconds: float) -> None:
    with capsys.disabled():
        print(f"\n[e2e] streamify up ({label}): gateway /readyz 200 after {seconds:.1f} s")


class Client:
    """A user of the public API through the gateway."""

    def __init__(self, http: httpx.Client, email: str) -> None:
        self.http, self.email = http, email
        self.token: str | None = None

    def register(self, display_name: str) -> dict[str, Any]:
        body = {"email": self.email, "password": PASSWORD, "display_name": display_name}
        response = self.http.post("/api/v1/auth/register", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def login(self) -> None:
        response = self.http.post("/api/v1/auth/login", json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.token
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"/api/v1{path}", headers=headers, **kwargs)


class TestStack:
    def test_a_user_journey_survives_a_restart(
        self, tmp_path: Path, db_prefix: str, stacks: list[Stack], capsys: pytest.CaptureFixture[str]
    ) -> None:
        stack = Stack(tmp_path / "data", _port_range(), _stack_env(db_prefix))
        stacks.append(stack)
        _report_ready_time(capsys, "first start", stack.start())

        with httpx.Client(base_url=stack.url, timeout=30) as http:
            creator = Client(http, f"creator-{RUN}-{uuid.uuid4().hex[:6]}@example.com")
            viewer = Client(http, f"viewer-{RUN}-{uuid.uuid4().hex[:6]}@example.com")
            creator.register("Creator")
            viewer.register("Viewer")
            creator.login()
            viewer.login()

            created = creator.call(
                "POST", "/users/me/channel", json={"channel_name": f"Channel {RUN}", "description": "e2e"}
            )
            assert created.status_code == 201, created.text
            channel_id = created.json()["channel"]["id"]

            subscribed = viewer.call("PUT", f"/channels/{channel_id}/subscription")
            assert subscribed.status_code == 200, subscribed.text
            channel = viewer.call("GET", f"/channels/{channel_id}")
            assert channel.status_code == 200, channel.text
            assert channel.json()["subscriber_count"] == 1
            subscriptions = viewer.call("GET", "/users/me/subscriptions")
            assert subscriptions.status_code == 200, subscriptions.text
            assert [item["channel"]["id"] for item in subscriptions.json()["items"]] == [channel_id]

        assert stack.signal(signal.SIGTERM) == 0
        assert stack.events("signal_received")[0]["signal"] == "SIGTERM"
        assert not stack.events("process_exited")

        _report_ready_time(capsys, "restart on the same data dir", stack.start())
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            viewer = Client(http, viewer.email)
            viewer.login()
            subscriptions = viewer.call("GET", "/users/me/subscriptions")
            assert [item["channel"]["id"] for item in subscriptions.json()["items"]] == [channel_id]
        assert stack.signal(signal.SIGTERM) == 0

    def test_ctrl_c_stops_every_process_including_embedded_servers_and_data_survives(
        self, tmp_path: Path, stacks: list[Stack], capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Nothing answers at the configured addresses: `up` embeds PostgreSQL and Redis.
        nowhere = free_port()
        env = _stack_env(
            "streamify",
            database_url_=f"postgresql+asyncpg://postgres@127.0.0.1:{nowhere}",
            redis_url=f"redis://127.0.0.1:{nowhere}/0",
        )
        data_dir = tmp_path / "data"
        stack = Stack(data_dir, _port_range(), env)
        stacks.append(stack)
        try:
            _report_ready_time(capsys, "embedded PostgreSQL and Redis, first start", stack.start())
            assert stack.events("postgres_embedded") and stack.events("redis_embedded")
            with httpx.Client(base_url=stack.url, timeout=30) as http:
                user = Client(http, f"embedded-{RUN}@example.com")
                user.register("Embedded")

            assert stack.signal(signal.SIGINT) == 0
            assert stack.events("signal_received")[0]["signal"] == "SIGINT"
            assert not (data_dir / "postgres" / "postmaster.pid").exists(), (
                "embedded PostgreSQL still running"
            )
            redis_state = json.loads((data_dir / "redis" / "server.json").read_text())
            assert not psutil.pid_exists(redis_state["pid"]) or _zombie(redis_state["pid"])

            _report_ready_time(capsys, "embedded, restart", stack.start())
            with httpx.Client(base_url=stack.url, timeout=30) as http:
                Client(http, user.email).login()
            assert stack.signal(signal.SIGINT) == 0
        finally:
            stack.kill()
            _stop_embedded(data_dir)

    def test_a_crashed_service_is_reported_and_the_stack_stops(
        self, tmp_path: Path, db_prefix: str, stacks: list[Stack]
    ) -> None:
        stack = Stack(tmp_path / "data", _port_range(), _stack_env(db_prefix))
        stacks.append(stack)
        stack.start()
        pids = stack.child_pids()
        os.kill(pids["catalog"], signal.SIGKILL)

        assert stack.process is not None
        assert stack.process.wait(timeout=STOP_TIMEOUT_S) == 1
        stack.wait_for_output_end()
        exited = stack.events("process_exited")
        assert [(e["name"], e["exit_code"]) for e in exited] == [("catalog", -signal.SIGKILL)], stack.output()
        stack.assert_everything_stopped(pids)


def _stop_embedded(data_dir: Path) -> None:
    from streamify.embedded import EmbeddedPostgres, EmbeddedRedis

    EmbeddedRedis(data_dir / "redis").stop()
    EmbeddedPostgres(data_dir / "postgres").stop()
