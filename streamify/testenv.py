"""``python -m streamify.testenv``: make sure PostgreSQL and Redis answer for the test suite.

For each server, in order: the one at the configured address when it answers; the machine's own
server when it is installed but stopped (started with the machine's commands); otherwise an
embedded one under ``.data/test-embedded``, started detached so it outlives this command and is
reused by the next run. The result goes to ``.data/testenv.env``, which ``tests/conftest.py`` reads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from streamify.embedded import EmbeddedPostgres, EmbeddedRedis, postgres_answers, redis_answers

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
MACHINE_START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Found:
    url: str
    # "reachable" (already answering), "machine" (started the installed server) or "embedded"
    how: str


def _wait_until(check: Callable[[], bool], timeout_s: float = MACHINE_START_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def start_machine_postgres() -> bool:
    """Start the Debian cluster(s) when PostgreSQL is installed; False when it is not."""
    clusters = Path("/etc/postgresql")
    if not shutil.which("pg_ctlcluster") or not clusters.is_dir():
        return False
    versions = sorted((p.name for p in clusters.iterdir() if (p / "main").is_dir()), key=_version_key)
    if not versions:
        return False
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    result = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
    _report(command, result)
    return result.returncode == 0


def start_machine_redis() -> bool:
    """Start the installed redis-server as a daemon; False when it is not installed."""
    if not shutil.which("redis-server"):
        return False
    for directory in (Path("/var/lib/redis"), Path("/var/log/redis")):
        directory.mkdir(parents=True, exist_ok=True)
    command = [
        *("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379"),
        *("--save", "", "--appendonly", "no", "--dir", "/var/lib/redis"),
        *("--logfile", "/var/log/redis/ci.log"),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
    _report(command, result)
    return result.returncode == 0


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _report(command: list[str], result: subprocess.CompletedProcess[str]) -> None:
    status = "ok" if result.returncode == 0 else f"exit {result.returncode}"
    print(f"testenv: {' '.join(command)}: {status}", file=sys.stderr)
    if result.returncode != 0:
        print((result.stderr or result.stdout).strip(), file=sys.stderr)


def ensure_postgres(url: str, *, embedded_dir: Path, use_machine: bool = True) -> Found:
    if postgres_answers(url):
        return Found(url, "reachable")
    if use_machine and start_machine_postgres() and _wait_until(lambda: postgres_answers(url)):
        return Found(url, "machine")
    server = EmbeddedPostgres(embedded_dir / "postgres")
    port, _ = server.start()
    return Found(server.base_url(port), "embedded")


def ensure_redis(url: str, *, embedded_dir: Path, use_machine: bool = True) -> Found:
    if redis_answers(url):
        return Found(url, "reachable")
    if use_machine and start_machine_redis() and _wait_until(lambda: redis_answers(url)):
        return Found(url, "machine")
    server = EmbeddedRedis(embedded_dir / "redis")
    port, _ = server.start()
    db = urlsplit(url).path.strip("/")
    return Found(server.url(port, int(db) if db.isdigit() else 15), "embedded")


def write_env(path: Path, *, database: Found, redis: Found) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Written by `python -m streamify.testenv`: postgres {database.how}, redis {redis.how}.\n"
        f"STREAMIFY_TEST_DATABASE_URL={database.url}\n"
        f"STREAMIFY_TEST_REDIS_URL={redis.url}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument(
        "--database-url", default=os.environ.get("STREAMIFY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("STREAMIFY_TEST_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--no-machine", action="store_true", help="never start the machine's servers")
    args = parser.parse_args(argv)
    embedded_dir = args.data_dir / "test-embedded"
    database = ensure_postgres(args.database_url, embedded_dir=embedded_dir, use_machine=not args.no_machine)
    redis = ensure_redis(args.redis_url, embedded_dir=embedded_dir, use_machine=not args.no_machine)
    env_file = args.data_dir / "testenv.env"
    write_env(env_file, database=database, redis=redis)
    print(f"testenv: postgres {database.how} at {database.url}; redis {redis.how} at {redis.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
