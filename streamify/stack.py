"""The local stack's shape: ports, database names and URLs, secrets, and each process's command and env.

Everything here is derived from four inputs so every ``streamify`` command addresses the same
stack: the data directory, the gateway port, the PostgreSQL base URL (``STREAMIFY_DATABASE_URL``)
and the Redis URL (``REDIS_URL``); both URLs fall back to embedded servers under the data directory.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import psutil
import structlog
from sqlalchemy.engine import make_url

from common.logging import configure_logging
from streamify.embedded import EmbeddedPostgres, EmbeddedRedis, postgres_answers, redis_answers
from streamify.supervisor import PrefixedOutput, ProcessSpec, Supervisor, preload

SERVICES = ("auth", "catalog", "streaming", "billing", "analytics")
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = Path(".data")
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DB_PREFIX = "streamify"
SECRETS_FILE = "secrets.env"
# Secrets generated once per data directory and reused by every later command on it: the
# service-to-service credential, and the passphrase that encrypts auth's signing keys at rest
# (a different one on the next start would leave auth unable to read its keys).
GENERATED_SECRETS = ("INTERNAL_SECRET", "AUTH_SIGNING_KEY_PASSPHRASE", "STREAMING_PLAYBACK_SECRET")

log = structlog.get_logger("streamify")

# Libraries every child imports; forked children find them loaded (see streamify.supervisor).
# Only libraries and the shared library: none of them reads the environment at import time.
PRELOAD = (
    "uvicorn.main",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.websockets_impl",
    "uvicorn.lifespan.on",
    "fastapi",
    "sqlmodel",
    "sqlalchemy.ext.asyncio",
    "asyncpg",
    "redis.asyncio",
    "httpx",
    "aiohttp",
    "jwt",
    "argon2",
    "structlog",
    "prometheus_client",
    "pydantic_settings",
    "arq",
    "common.app",
    "common.internal",
    "common.identity",
    "common.ratelimit",
)


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    port: int = DEFAULT_PORT
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    db_prefix: str = DEFAULT_DB_PREFIX
    # Transcoder worker processes: one per core unless STREAMIFY_TRANSCODERS says otherwise.
    transcoders: int = field(default_factory=lambda: default_transcoders())

    @classmethod
    def from_env(
        cls, *, data_dir: Path, port: int = DEFAULT_PORT, environ: Mapping[str, str] = os.environ
    ) -> StackConfig:
        return cls(
            data_dir=data_dir.resolve(),
            port=port,
            database_url=environ.get("STREAMIFY_DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            db_prefix=environ.get("STREAMIFY_DB_PREFIX") or DEFAULT_DB_PREFIX,
            transcoders=default_transcoders(environ),
        )

    def service_port(self, service: str) -> int:
        """auth on P+1, catalog P+2, streaming P+3, billing P+4, analytics P+5."""
        return self.port + 1 + SERVICES.index(service)

    def transcoder_metrics_port(self, index: int) -> int:
        """Where transcoder-``index`` (from 1) serves /metrics: P+10, P+11, ... (8090, 8091, ...)."""
        return self.port + 9 + index

    def database_name(self, service: str) -> str:
        return f"{self.db_prefix}_{service}"


def default_transcoders(environ: Mapping[str, str] = os.environ) -> int:
    """``STREAMIFY_TRANSCODERS`` when set (at least 1), else one worker per core."""
    configured = (environ.get("STREAMIFY_TRANSCODERS") or "").strip()
    if configured:
        try:
            count = int(configured)
        except ValueError:
            raise ValueError(f"STREAMIFY_TRANSCODERS must be a whole number, not {configured!r}") from None
        if count < 1:
            raise ValueError(f"STREAMIFY_TRANSCODERS must be at least 1, not {count}")
        return count
    return os.cpu_count() or 1


def database_url(base_url: str, database: str) -> str:
    """``base_url`` (server, user, driver, options) pointed at ``database``."""
    return make_url(base_url).set(database=database).render_as_string(hide_password=False)


def redis_db(url: str) -> int:
    """The database number in a redis:// URL (0 when it names none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


# -- PostgreSQL and Redis: configured when they answer, embedded otherwise ---------------------


@dataclass
class Backends:
    """The servers a command talks to, and the embedded ones it must stop when it is done."""

    database_url: str
    redis_url: str
    embedded: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)


def embedded_postgres(config: StackConfig) -> EmbeddedPostgres:
    return EmbeddedPostgres(config.data_dir / "postgres")


def embedded_redis(config: StackConfig) -> EmbeddedRedis:
    return EmbeddedRedis(config.data_dir / "redis")


@contextmanager
def backends(config: StackConfig, *, redis: bool = True, owner: bool = False) -> Iterator[Backends]:
    """PostgreSQL (and Redis) for ``config``: the configured servers when they answer, else embedded.

    Embedded servers started here are stopped on exit, PostgreSQL last. The ``owner`` (``up``) also
    stops embedded servers it found running, which an earlier ``up`` that was killed left behind;
    other commands leave a running stack alone.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stop: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if postgres_answers(config.database_url):
            pg_url = config.database_url
            log.info("postgres_configured", url=_redact(pg_url))
        else:
            pg = embedded_postgres(config)
            port, started = pg.start()
            if started or owner:
                stop.append(pg)
            pg_url = pg.base_url(port)
            log.info("postgres_embedded", url=pg_url, data=str(pg.pgdata), started=started)
        redis_url = config.redis_url
        if redis:
            if redis_answers(config.redis_url):
                log.info("redis_configured", url=_redact(redis_url))
            else:
                rd = embedded_redis(config)
                port, started = rd.start()
                if started or owner:
                    stop.append(rd)
                redis_url = rd.url(port, redis_db(config.redis_url))
                log.info("redis_embedded", url=redis_url, data=str(rd.directory), started=started)
        yield Backends(database_url=pg_url, redis_url=redis_url, embedded=stop)
    finally:
        # Redis first, PostgreSQL last: the order they were needed in, reversed.
        for server in sorted(stop, key=lambda s: isinstance(s, EmbeddedPostgres)):
            log.info("embedded_stopping", server=type(server).__name__)
            server.stop()


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# -- Databases and migrations -------------------------------------------------------------------


def migrate(config: StackConfig, base_url: str, services: Sequence[str] = SERVICES) -> None:
    """Create each service's database when missing and run its migrations to head (idempotent)."""
    from common.db import ensure_database
    from common.migrations import upgrade

    urls = {service: database_url(base_url, config.database_name(service)) for service in services}

    async def create_all() -> None:
        await asyncio.gather(*(ensure_database(url) for url in urls.values()))

    asyncio.run(create_all())
    # Sequential: Alembic's context is process-global.
    for service, url in urls.items():
        upgrade(f"services.{service}", url)
        log.info("migrated", service=service, database=config.database_name(service))


# -- Secrets ------------------------------------------------------------------------------------


def load_secrets(data_dir: Path) -> dict[str, str]:
    """Development secrets for this data directory, generated on first use and kept in secrets.env."""
    path = data_dir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    missing = [name for name in GENERATED_SECRETS if not values.get(name)]
    if missing:
        for name in missing:
            values[name] = secrets.token_urlsafe(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        body = "# Generated by `streamify up` for this data directory; development only.\n"
        body += "".join(f"{key}={value}\n" for key, value in values.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
    return values


def command_environment(config: StackConfig, environ: MutableMapping[str, str] = os.environ) -> None:
    """For in-process commands (create-admin, rotate-keys): the data directory's secrets and the
    development environment, unless configured otherwise, as ``up`` gives its children."""
    for key, value in load_secrets(config.data_dir).items():
        environ.setdefault(key, value)
    environ.setdefault("ENVIRONMENT", "development")


# -- Processes ----------------------------------------------------------------------------------


def _uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        "5",
        "--no-access-log",
        *extra,
    ]


# The gateway's protocol sends each response in one write; and uvicorn must not trust
# X-Forwarded-For from loopback clients, or a local client could choose its rate-limit IP.
# Which peers each service calls (streaming: video facts from catalog, charges from billing).
SERVICE_PEERS: dict[str, tuple[str, ...]] = {"streaming": ("catalog", "billing")}

GATEWAY_UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "gateway.server:GatewayHttpProtocol",
    "--no-proxy-headers",
)


def process_specs(
    config: StackConfig,
    *,
    database_base_url: str,
    redis_url: str,
    secrets: Mapping[str, str],
    environ: Mapping[str, str] = os.environ,
) -> list[ProcessSpec]:
    """The five services, the gateway and the transcoder workers, with their commands and env."""
    auth_port = config.service_port("auth")
    shared = dict(environ)
    # Configuration by environment wins; the generated secrets fill what is not set.
    for key, value in secrets.items():
        shared.setdefault(key, value)
    shared.setdefault("ENVIRONMENT", "development")
    # Object storage (local backend unless STORAGE_BACKEND=s3) lives with the rest of the stack's data.
    shared.setdefault("STORAGE_LOCAL_DIR", str(config.data_dir / "storage"))
    shared.update(
        {
            "REDIS_URL": redis_url,
            "JWKS_URL": f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    specs: list[ProcessSpec] = []
    for service in SERVICES:
        port = config.service_port(service)
        prefix = service.upper()
        env = {
            **shared,
            f"{prefix}_DATABASE_URL": database_url(database_base_url, config.database_name(service)),
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(port),
        }
        # Peers a service calls over HTTP (internal APIs), at this stack's ports.
        for peer in SERVICE_PEERS.get(service, ()):
            env.setdefault(f"{prefix}_{peer.upper()}_URL", f"http://127.0.0.1:{config.service_port(peer)}")
        specs.append(
            ProcessSpec(
                name=service,
                argv=_uvicorn(f"services.{service}.app:create_app", port),
                env=env,
                ready_url=f"http://127.0.0.1:{port}/readyz",
            )
        )
    upstreams = {service: [f"http://127.0.0.1:{config.service_port(service)}"] for service in SERVICES}
    specs.append(
        ProcessSpec(
            name="gateway",
            argv=_uvicorn("gateway.app:create_app", config.port, *GATEWAY_UVICORN_FLAGS),
            env={
                **shared,
                "GATEWAY_UPSTREAMS": json.dumps(upstreams),
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(config.port),
            },
            ready_url=f"http://127.0.0.1:{config.port}/readyz",
        )
    )
    for index in range(1, config.transcoders + 1):
        specs.append(
            ProcessSpec(
                name=f"transcoder-{index}",
                argv=[sys.executable, "-m", "transcoder.worker"],
                # The catalog this stack runs (its port follows --port); INTERNAL_SECRET, REDIS_URL
                # and STORAGE_* come with the shared environment.
                env={
                    **shared,
                    "CATALOG_URL": f"http://127.0.0.1:{config.service_port('catalog')}",
                    "TRANSCODER_METRICS_PORT": str(config.transcoder_metrics_port(index)),
                },
            )
        )
    return specs


def ports_in_use(config: StackConfig) -> list[int]:
    """The stack's ports something else already listens on."""
    busy = []
    for port in (config.port, *(config.service_port(service) for service in SERVICES)):
        with socket.socket() as sock:
            # As uvicorn binds: connections of an earlier run in TIME_WAIT do not block the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def public_url(config: StackConfig) -> str:
    return f"http://127.0.0.1:{config.port}/"


# -- up -----------------------------------------------------------------------------------------


@contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One ``up`` per data directory: a second one would fight the first over its servers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "up.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `streamify up` is running on {data_dir}") from None
        yield


class StackError(Exception):
    """A reason the stack cannot start, for the user."""


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_up(config: StackConfig, *, out: TextIO = sys.stdout) -> int:
    """Run the whole platform in the foreground until Ctrl-C/SIGTERM (0) or a child's exit (1)."""
    names = [*SERVICES, "gateway", "streamify", f"transcoder-{config.transcoders}"]
    output = PrefixedOutput(out, max(len(name) for name in names))
    configure_logging("streamify", os.environ.get("LOG_LEVEL", "INFO"))
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(output.writer("streamify")))  # type: ignore[arg-type]
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(output.writer("streamify"))
    # One line per readiness poll is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def on_ready(_: float) -> None:
        # Counted from the command's start, interpreter start-up and imports included.
        seconds = time.time() - psutil.Process().create_time()
        log.info("stack_ready", url=public_url(config), seconds=round(seconds, 2))
        output.line("streamify", f"Streamify is running at {public_url(config)} (ready in {seconds:.1f} s)")
        output.line("streamify", "Press Ctrl-C to stop.")

    # Until the supervisor's loop takes over, SIGTERM/SIGHUP unwind like Ctrl-C so embedded servers stop.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _exclusive(config.data_dir):
            busy = ports_in_use(config)
            if busy:
                raise StackError(f"port(s) {', '.join(map(str, busy))} already in use; choose another --port")
            with backends(config, owner=True) as found:
                return _supervise(config, found, output, on_ready)
    except KeyboardInterrupt:
        log.info("interrupted_during_start")
        return 0
    finally:
        for sig, saved in previous.items():
            signal.signal(sig, saved)


def _supervise(
    config: StackConfig, found: Backends, output: PrefixedOutput, on_ready: Callable[[float], None]
) -> int:
    migrate(config, found.database_url)
    specs = process_specs(
        config,
        database_base_url=found.database_url,
        redis_url=found.redis_url,
        secrets=load_secrets(config.data_dir),
    )
    supervisor = Supervisor(specs, output=output)
    if supervisor.fork:
        preload(PRELOAD)
    try:
        supervisor.launch()
        return asyncio.run(supervisor.run(on_ready=on_ready))
    except BaseException:
        supervisor.terminate_now()
        raise
