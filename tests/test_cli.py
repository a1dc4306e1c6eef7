"""The `streamify` CLI's pieces without the whole mesh: the stack's shape, `migrate`, the
supervisor's policy on real child processes, and the test-environment bootstrap (reachable servers
and, for real, embedded PostgreSQL and Redis that keep their data across a restart)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis as redis_sync
from click.testing import CliRunner, Result

from common.db import asyncpg_dsn, drop_database
from streamify import stack, testenv
from streamify.cli import main
from streamify.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, free_port_range, postgres_answers
from tests.conftest import PG_BASE, REDIS_URL, ROOT


class TestStackShape:
    def test_services_listen_on_the_five_ports_after_the_gateway(self) -> None:
        config = stack.StackConfig(port=9000)
        ports = {service: config.service_port(service) for service in stack.SERVICES}
        assert ports == {"auth": 9001, "catalog": 9002, "streaming": 9003, "billing": 9004, "analytics": 9005}

    def test_database_urls_come_from_one_base_url_and_a_prefix(self) -> None:
        config = stack.StackConfig.from_env(
            data_dir=Path("x"),
            environ={
                "STREAMIFY_DATABASE_URL": "postgresql+asyncpg://app:s3cret@db.internal:6432/ignored?ssl=require",
                "STREAMIFY_DB_PREFIX": "e2e_1",
            },
        )
        url = stack.database_url(config.database_url, config.database_name("billing"))
        assert url == "postgresql+asyncpg://app:s3cret@db.internal:6432/e2e_1_billing?ssl=require"

    def test_up_starts_one_transcoder_per_core_unless_configured(self, tmp_path: Path) -> None:
        cores = os.cpu_count() or 1
        default = stack.StackConfig.from_env(data_dir=tmp_path, environ={})
        assert default.transcoders == cores
        assert stack.StackConfig().transcoders == cores
        configured = stack.StackConfig.from_env(data_dir=tmp_path, environ={"STREAMIFY_TRANSCODERS": "3"})
        assert configured.transcoders == 3
        specs = stack.process_specs(
            default, database_base_url=PG_BASE, redis_url=REDIS_URL, secrets={}, environ={}
        )
        workers = [spec.name for spec in specs if spec.name.startswith("transcoder-")]
        assert workers == [f"transcoder-{index}" for index in range(1, cores + 1)]
        for bad in ("0", "-1", "two"):
            with pytest.raises(ValueError, match="STREAMIFY_TRANSCODERS"):
                stack.StackConfig.from_env(data_dir=tmp_path, environ={"STREAMIFY_TRANSCODERS": bad})

    def test_each_process_gets_its_database_the_shared_secret_and_the_auth_keys(self, tmp_path: Path) -> None:
        config = stack.StackConfig(data_dir=tmp_path, port=9000, db_prefix="p", transcoders=2)
        specs = stack.process_specs(
            config,
            database_base_url="postgresql+asyncpg://postgres@127.0.0.1:5999",
            redis_url="redis://127.0.0.1:6999/3",
            secrets={"INTERNAL_SECRET": "generated"},
            environ={"PATH": "/usr/bin"},
        )
        by_name = {spec.name: spec for spec in specs}
        assert list(by_name) == [*stack.SERVICES, "gateway", "transcoder-1", "transcoder-2"]
        catalog = by_name["catalog"]
        assert catalog.env["CATALOG_DATABASE_URL"] == "postgresql+asyncpg://postgres@127.0.0.1:5999/p_catalog"
        assert "--port" in catalog.argv and catalog.argv[catalog.argv.index("--port") + 1] == "9002"
        assert catalog.ready_url == "http://127.0.0.1:9002/readyz"
        for spec in specs:
            assert spec.env["REDIS_URL"] == "redis://127.0.0.1:6999/3"
            assert spec.env["INTERNAL_SECRET"] == "generated"
            assert spec.env["JWKS_URL"] == "http://127.0.0.1:9001/.well-known/jwks.json"
            assert spec.env["ENVIRONMENT"] == "development"
            assert spec.env["STORAGE_LOCAL_DIR"] == str(tmp_path / "storage")
        upstreams = json.loads(by_name["gateway"].env["GATEWAY_UPSTREAMS"])
        assert upstreams["analytics"] == ["http://127.0.0.1:9005"]
        assert set(upstreams) == set(stack.SERVICES)
        # A local client must not choose its rate-limit address through X-Forwarded-For.
        gateway_argv = by_name["gateway"].argv
        assert "--no-proxy-headers" in gateway_argv
        assert gateway_argv[gateway_argv.index("--http") + 1] == "gateway.server:GatewayHttpProtocol"

    def test_configured_secrets_win_over_generated_ones(self, tmp_path: Path) -> None:
        specs = stack.process_specs(
            stack.StackConfig(data_dir=tmp_path),
            database_base_url="postgresql+asyncpg://postgres@127.0.0.1:5432",
            redis_url="redis://127.0.0.1:6379/0",
            secrets={"INTERNAL_SECRET": "generated"},
            environ={"INTERNAL_SECRET": "from-the-operator"},
        )
        assert {spec.env["INTERNAL_SECRET"] for spec in specs} == {"from-the-operator"}


class TestFreePorts:
    def test_ports_for_servers_are_outside_the_range_outgoing_connections_take(self) -> None:
        # A port in the kernel's ephemeral range can be taken by any process's next connect()
        # between being picked and being bound; CI once lost a stack's auth service that way.
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        bases = [free_port_range(6) for _ in range(50)] + [free_port() for _ in range(50)]
        assert all(not low <= base <= high for base in bases)
        assert all(base + 5 < low or base > high for base in bases[:50])

    def test_every_port_of_a_range_is_free(self) -> None:
        base = free_port_range(6)
        held = []
        try:
            for port in range(base, base + 6):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        finally:
            for sock in held:
                sock.close()


class TestSecrets:
    def test_secrets_are_generated_once_per_data_dir_and_private(self, tmp_path: Path) -> None:
        first = stack.load_secrets(tmp_path)
        second = stack.load_secrets(tmp_path)
        assert first == second
        assert len(first["INTERNAL_SECRET"]) >= 32
        assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600
        assert stack.load_secrets(tmp_path / "other")["INTERNAL_SECRET"] != first["INTERNAL_SECRET"]


class TestMigrateCommand:
    async def test_migrate_creates_every_service_database_at_head(self, tmp_path: Path) -> None:
        prefix = f"streamify_clitest_{uuid.uuid4().hex[:8]}"
        env = {"STREAMIFY_DATABASE_URL": PG_BASE, "STREAMIFY_DB_PREFIX": prefix}
        try:
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["migrate", "--data-dir", str(tmp_path)], env=env
            )
            assert result.exit_code == 0, result.output
            for service in stack.SERVICES:
                url = stack.database_url(PG_BASE, f"{prefix}_{service}")
                conn = await asyncpg.connect(asyncpg_dsn(url))
                try:
                    assert await conn.fetchval("SELECT version_num FROM alembic_version")
                finally:
                    await conn.close()
        finally:
            for service in stack.SERVICES:
                await drop_database(stack.database_url(PG_BASE, f"{prefix}_{service}"))


class TestAdminCommands:
    @pytest.fixture
    async def cli_env(self, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
        prefix = f"streamify_clitest_{uuid.uuid4().hex[:8]}"
        # Every variable the commands read or default is named, so CliRunner restores all of them.
        yield {
            "STREAMIFY_DATABASE_URL": PG_BASE,
            "STREAMIFY_DB_PREFIX": prefix,
            "REDIS_URL": REDIS_URL,
            "ENVIRONMENT": "development",
            "INTERNAL_SECRET": "cli-test-internal-secret",
            "AUTH_SIGNING_KEY_PASSPHRASE": "cli-test-passphrase",
            "STREAMIFY_DATA_DIR": str(tmp_path),
        }
        for service in stack.SERVICES:
            await drop_database(stack.database_url(PG_BASE, f"{prefix}_{service}"))

    async def _invoke(self, args: list[str], env: dict[str, str]) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, args, env=env)

    async def _auth_db(self, env: dict[str, str]) -> asyncpg.Connection:
        url = stack.database_url(PG_BASE, f"{env['STREAMIFY_DB_PREFIX']}_auth")
        return await asyncpg.connect(asyncpg_dsn(url))

    async def test_create_admin_creates_an_admin_then_promotes_without_duplicating(
        self, cli_env: dict[str, str]
    ) -> None:
        email = f"admin-{uuid.uuid4().hex[:6]}@example.com"
        env = {**cli_env, "STREAMIFY_ADMIN_PASSWORD": "violet-harbor-engine-93"}
        first = await self._invoke(["create-admin", "--email", email, "--display-name", "Ops"], env)
        assert first.exit_code == 0, first.output
        again = await self._invoke(["create-admin", "--email", email], env)
        assert again.exit_code == 0, again.output
        conn = await self._auth_db(cli_env)
        try:
            rows = await conn.fetch("SELECT role, display_name FROM users WHERE email = $1", email)
        finally:
            await conn.close()
        assert [(row["role"], row["display_name"]) for row in rows] == [("admin", "Ops")]

    async def test_create_admin_refuses_a_weak_password_with_a_readable_error(
        self, cli_env: dict[str, str]
    ) -> None:
        result = await self._invoke(
            ["create-admin", "--email", "weak@example.com"],
            {**cli_env, "STREAMIFY_ADMIN_PASSWORD": "password"},
        )
        assert result.exit_code == 1
        assert "Error:" in result.output and "Traceback" not in result.output

    async def test_rotate_keys_makes_a_new_key_current(self, cli_env: dict[str, str]) -> None:
        migrated = await self._invoke(["migrate"], cli_env)
        assert migrated.exit_code == 0, migrated.output
        rotated = await self._invoke(["auth", "rotate-keys"], cli_env)
        assert rotated.exit_code == 0, rotated.output
        kid = rotated.output.strip().rsplit(" ", 1)[-1]
        conn = await self._auth_db(cli_env)
        try:
            state = await conn.fetchval("SELECT state FROM signing_keys WHERE kid = $1", kid)
        finally:
            await conn.close()
        assert state == "current"


# -- The supervisor, on small real processes --------------------------------------------------

SUPERVISOR_DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from streamify.supervisor import PrefixedOutput, ProcessSpec, Supervisor
    from common.logging import configure_logging
    import structlog

    specs = []
    for arg in sys.argv[1:]:
        name, _, command = arg.partition("=")
        kind, _, value = command.partition(":")
        if kind == "http":  # python -m http.server: forked from this interpreter
            argv = [sys.executable, "-m", "http.server", value, "--bind", "127.0.0.1"]
            specs.append(ProcessSpec(name, argv, {}, f"http://127.0.0.1:{value}/"))
        else:  # py:CODE, an inline program in a fresh interpreter
            specs.append(ProcessSpec(name, [sys.executable, "-c", value], {}))
    output = PrefixedOutput(sys.stdout, 10)
    configure_logging("streamify")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(output.writer("streamify")))
    supervisor = Supervisor(specs, output=output, stop_timeout_s=3)
    supervisor.launch()
    ready = lambda seconds: output.line("streamify", "READY")
    sys.exit(asyncio.run(supervisor.run(on_ready=ready, ready_timeout_s=20)))
    """
)


def _start_driver(*children: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_DRIVER, *children],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(process: subprocess.Popen[str], needle: str, timeout_s: float = 30) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(lines)}")


def _events(lines: list[str], event: str) -> list[dict[str, object]]:
    found = []
    for line in lines:
        _, _, body = line.partition(" | ")
        if body.startswith("{"):
            record = json.loads(body)
            if record.get("event") == event:
                found.append(record)
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class TestSupervisor:
    def test_a_crashed_child_is_reported_and_the_rest_is_stopped(self) -> None:
        port = free_port()
        process = _start_driver(
            f"web=http:{port}", "crasher=py:import time; time.sleep(3); raise SystemExit(3)"
        )
        lines = _read_until(process, "READY")
        assert _listening(port)
        lines += process.stdout.readlines() if process.stdout else []
        assert process.wait(timeout=30) == 1
        assert [(e["name"], e["exit_code"]) for e in _events(lines, "process_exited")] == [("crasher", 3)]
        stopped = {e["name"]: e["exit_code"] for e in _events(lines, "process_stopped")}
        assert set(stopped) == {"web", "crasher"}
        assert not _listening(port)

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
    def test_a_signal_stops_every_child_and_exits_zero(self, sig: signal.Signals) -> None:
        ports = [free_port(), free_port()]
        process = _start_driver(
            f"one=http:{ports[0]}", f"two=http:{ports[1]}", "idle=py:import time; time.sleep(600)"
        )
        lines = _read_until(process, "READY")
        pids = [int(str(e["pid"])) for e in _events(lines, "process_started")]
        assert all(_listening(port) for port in ports)
        process.send_signal(sig)
        lines += process.stdout.readlines() if process.stdout else []
        assert process.wait(timeout=30) == 0
        assert _events(lines, "signal_received")[0]["signal"] == sig.name
        assert not _events(lines, "process_exited")
        assert not any(_listening(port) for port in ports)
        assert not any(_alive(pid) for pid in pids)

    def test_children_forked_from_the_supervisor_print_under_their_name(self) -> None:
        port = free_port()
        process = _start_driver(f"web=http:{port}")
        lines = _read_until(process, "READY")
        process.send_signal(signal.SIGTERM)
        lines += process.stdout.readlines() if process.stdout else []
        process.wait(timeout=30)
        started = _events(lines, "process_started")[0]
        assert started["forked"] is True
        assert any(line.startswith("web ") and "Serving HTTP" in line for line in lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- python -m streamify.testenv ----------------------------------------------------------------


class TestTestEnvironment:
    def test_servers_that_answer_are_used_as_they_are(self, tmp_path: Path) -> None:
        embedded = tmp_path / "embedded"
        database = testenv.ensure_postgres(PG_BASE, embedded_dir=embedded, use_machine=False)
        redis = testenv.ensure_redis(REDIS_URL, embedded_dir=embedded, use_machine=False)
        assert (database.how, database.url) == ("reachable", PG_BASE)
        assert (redis.how, redis.url) == ("reachable", REDIS_URL)
        assert not embedded.exists()

    def test_env_file_names_both_servers(self, tmp_path: Path) -> None:
        assert (
            testenv.main(["--data-dir", str(tmp_path), "--database-url", PG_BASE, "--redis-url", REDIS_URL])
            == 0
        )
        values = dict(
            line.split("=", 1) for line in (tmp_path / "testenv.env").read_text().splitlines() if "=" in line
        )
        assert values == {"STREAMIFY_TEST_DATABASE_URL": PG_BASE, "STREAMIFY_TEST_REDIS_URL": REDIS_URL}

    @pytest.mark.slow
    async def test_absent_servers_are_embedded_and_keep_their_data_across_a_restart(
        self, tmp_path: Path
    ) -> None:
        embedded = tmp_path / "embedded"
        nowhere = free_port()
        pg_server = EmbeddedPostgres(embedded / "postgres")
        redis_server = EmbeddedRedis(embedded / "redis")
        try:
            database = await asyncio.to_thread(
                testenv.ensure_postgres,
                f"postgresql+asyncpg://postgres@127.0.0.1:{nowhere}",
                embedded_dir=embedded,
                use_machine=False,
            )
            redis = await asyncio.to_thread(
                testenv.ensure_redis,
                f"redis://127.0.0.1:{nowhere}/15",
                embedded_dir=embedded,
                use_machine=False,
            )
            assert database.how == redis.how == "embedded"
            assert redis.url.endswith("/15")

            conn = await asyncpg.connect(asyncpg_dsn(database.url + "/postgres"))
            await conn.execute("CREATE TABLE kept (value text); INSERT INTO kept VALUES ('still here')")
            await conn.close()
            client = redis_sync.Redis.from_url(redis.url)
            client.set("kept", "still here")
            client.close()

            # A second run finds them running and reuses them.
            again = await asyncio.to_thread(
                testenv.ensure_postgres, database.url, embedded_dir=embedded, use_machine=False
            )
            assert again == testenv.Found(database.url, "reachable")

            await asyncio.to_thread(redis_server.stop)
            await asyncio.to_thread(pg_server.stop)
            assert not await asyncio.to_thread(postgres_answers, database.url)

            pg_port, pg_started = await asyncio.to_thread(pg_server.start)
            redis_port, redis_started = await asyncio.to_thread(redis_server.start)
            assert pg_started and redis_started
            conn = await asyncpg.connect(asyncpg_dsn(pg_server.base_url(pg_port) + "/postgres"))
            assert await conn.fetchval("SELECT value FROM kept") == "still here"
            await conn.close()
            client = redis_sync.Redis.from_url(redis_server.url(redis_port, 15))
            assert client.get("kept") == b"still here"
            client.close()
        finally:
            await asyncio.to_thread(redis_server.stop)
            await asyncio.to_thread(pg_server.stop)
        assert pg_server.running_port() is None
        assert redis_server.running_port() is None
