"""The transactional outbox: events leave a service only once the change they report committed,
and a crash between the commit and the publish loses nothing.

A service writes its events into its own ``event_outbox`` table in the transaction that makes the
change (``stage``); they commit or roll back with it. An ``OutboxRelay`` in the service moves
committed rows to the Redis stream (one pipelined XADD per batch) and deletes them. If the process
dies after the commit, the rows are still there and the relay (of this or any other replica) sends
them when it next runs.

Several replicas relay one database together: a batch is taken with ``FOR UPDATE SKIP LOCKED``
(deleted and returned by one statement) and the transaction commits only after the XADD, so each
row is held by one relay at a time and leaves the table only once it is on the stream. A relay
that dies after the XADD but before its commit leaves the rows to be sent again: delivery is
at-least-once, and consumers deduplicate by event id (see ``common.events``).

The relay sends promptly: a commit of a session that staged rows wakes the relays of the same
database in this process (``stage`` marks the session; a SQLAlchemy ``after_commit`` listener
nudges); without a nudge (another replica committed, a service writing its outbox from SQL) it
polls every ``idle_poll_s``. Redis or PostgreSQL being away only delays delivery: failures are
logged and retried with backoff, and the rows wait in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    column,
    event,
    func,
    insert,
    table,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from common.events import Event, EventBus

OUTBOX_TABLE = "event_outbox"
log = structlog.get_logger("outbox")

EVENTS_PUBLISHED = Counter(
    "streamify_events_published_total",
    "Events put on the event stream, by the service that produced them.",
    ["source"],
)
OUTBOX_PENDING = Gauge(
    "streamify_outbox_pending",
    "Events committed to the service's outbox and not yet on the event stream (last count).",
    ["source"],
)


def outbox_table(metadata: MetaData) -> Table:
    """The ``event_outbox`` table, added to a producing service's metadata (and its migrations)."""
    return Table(
        OUTBOX_TABLE,
        metadata,
        # The relay's order and its batch key; identity, so SQL (billing's functions) can insert too.
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("id", Uuid, nullable=False),
        Column("type", String, nullable=False),
        # The envelope as JSON text, sent to the stream byte for byte as it was committed.
        Column("envelope", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


# What ``stage`` inserts into, whichever service's metadata holds the real table.
_ROWS = table(OUTBOX_TABLE, column("id", Uuid), column("type", String), column("envelope", Text))
_STAGED = "streamify.outbox_staged"


async def stage(session: AsyncSession, *events: Event) -> None:
    """Write ``events`` into the outbox in the session's current transaction.

    They reach the stream only if the transaction commits; the commit wakes this process's relay.
    """
    if not events:
        return
    rows = [{"id": e.id, "type": e.type, "envelope": e.model_dump_json()} for e in events]
    await session.execute(insert(_ROWS).values(rows))
    session.info[_STAGED] = True


@event.listens_for(Session, "after_commit")
def _nudge_relays(session: Session) -> None:
    if session.info.pop(_STAGED, False):
        bind = session.bind
        url = getattr(bind, "url", None)
        for relay in list(_RELAYS):
            if url is None or relay.url == url:
                relay.wake()


@event.listens_for(Session, "after_rollback")
def _forget_staged(session: Session) -> None:
    session.info.pop(_STAGED, None)


# The running relays of this process, so a commit can wake the one of its database.
_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()

# Taken out of the table and locked in one statement; only the commit after the XADD makes the
# removal real (a failed XADD rolls it back, a dead relay's transaction dies with its connection).
_TAKE_BATCH = text(
    "DELETE FROM event_outbox WHERE seq IN"
    " (SELECT seq FROM event_outbox ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING seq, envelope"
)
_COUNT = text("SELECT count(*) FROM event_outbox")
_LAST_SEQ = text("SELECT max(seq) FROM event_outbox")
_HELD_UP_TO = text("SELECT EXISTS (SELECT 1 FROM event_outbox WHERE seq <= :last)")


class OutboxRelay:
    """Moves one database's committed outbox rows to the event stream, in batches.

    ``start()`` runs it in the background (a service's lifespan); ``drain()`` sends everything
    there is now and says how many (tests, shutdown); ``wake()`` makes a sleeping relay look now
    (or ``linger_s`` after its last batch started, so that a stream of commits leaves in batches).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        *,
        source: str = "unknown",
        batch_size: int = 1000,
        idle_poll_s: float = 0.5,
        linger_s: float = 0.05,
        max_retry_s: float = 5.0,
        pending_refresh_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.source = source
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.linger_s = linger_s
        self.max_retry_s = max_retry_s
        self.pending_refresh_s = pending_refresh_s
        self.url: URL = engine.url
        self._published = EVENTS_PUBLISHED.labels(source)
        self._pending = OUTBOX_PENDING.labels(source)
        self._counted_at = 0.0
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._connection: AsyncConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- control --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _RELAYS.add(self)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.source}")

    def wake(self) -> None:
        """Look at the outbox now (safe to call from any thread; a no-op when not started)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def drain(self) -> int:
        """Send everything committed before this call; how many rows this relay sent.

        Returns once all of it is on the stream: rows another relay holds are waited for (it is
        sending them; if it dies, its lock goes with its connection and this relay sends them).
        """
        async with self.engine.connect() as connection:
            last = (await connection.execute(_LAST_SEQ)).scalar()
        sent = 0
        while last is not None:
            batch = await self._relay_batch()
            sent += batch
            if batch >= self.batch_size:
                continue
            async with self.engine.connect() as connection:
                if not (await connection.execute(_HELD_UP_TO, {"last": last})).scalar():
                    break
            await asyncio.sleep(0.01)
        await self._count_pending(force=True)
        if self._task is None:  # not running: keep no connection
            await self._release_connection()
        return sent

    async def aclose(self, *, timeout_s: float = 2.0) -> None:
        """Stop the background relay, after one last attempt to send what is waiting (rows that
        do not make it stay in the table for the next start)."""
        _RELAYS.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            try:
                async with asyncio.timeout(timeout_s):
                    await self.drain()
            except Exception as exc:
                log.warning("outbox_not_drained_at_shutdown", source=self.source, error=repr(exc))
        await self._release_connection()
        self._loop = None

    # --- work -----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        started, sent = -self.linger_s, 0
        while True:
            # Under a stream of commits (charges) every one wakes the relay: batches start at most
            # every linger_s, so the next one collects many rows instead of costing a cycle (three
            # database round trips and an XADD) per commit. A lone commit goes out at once, and
            # a backlog (the last batch was full) drains at full speed.
            if sent < self.batch_size:
                await asyncio.sleep(max(0.0, started + self.linger_s - time.monotonic()))
            started = time.monotonic()
            # Cleared before reading, so a commit during the batch makes the wait below return at once.
            self._wakeup.clear()
            try:
                sent = await self._relay_batch()
                if not sent:  # idle: the connection goes back to the pool (and its health checks)
                    await self._release_connection()
                await self._count_pending()
            except Exception as exc:
                failures += 1
                delay = min(self.max_retry_s, self.idle_poll_s * 2 ** min(failures - 1, 10))
                if failures == 1:
                    log.exception("outbox_relay_failed", source=self.source, retry_in_s=delay)
                else:
                    log.warning(
                        "outbox_relay_failed",
                        source=self.source,
                        error=repr(exc),
                        attempt=failures,
                        retry_in_s=delay,
                    )
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("outbox_relay_recovered", source=self.source, after_attempts=failures)
                failures = 0
            if sent >= self.batch_size:
                continue  # a backlog: the next batch right away
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_poll_s):
                    await self._wakeup.wait()

    async def _relay_batch(self) -> int:
        """One batch: take rows (locked), XADD them in the order they were written, commit. A row
        leaves the table only if its XADD succeeded."""
        async with self._lock:
            # One connection kept while there is work: a pool checkout (with its liveness ping) per
            # batch costs more than the batch itself when commits come one by one.
            if self._connection is None:
                self._connection = await self.engine.connect()
            connection = self._connection
            try:
                async with connection.begin():
                    rows = (await connection.execute(_TAKE_BATCH, {"limit": self.batch_size})).all()
                    if rows:
                        await self.bus.publish_raw(envelope for _, envelope in sorted(rows))
            except BaseException:
                self._connection = None
                with contextlib.suppress(Exception):
                    await connection.invalidate()
                raise
        self._published.inc(len(rows))
        return len(rows)

    async def _release_connection(self) -> None:
        async with self._lock:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                with contextlib.suppress(Exception):
                    await connection.close()

    async def _count_pending(self, *, force: bool = False) -> None:
        # A full count, but not on every batch: under a large backlog it is a scan.
        now = time.monotonic()
        if not force and now - self._counted_at < self.pending_refresh_s:
            return
        self._counted_at = now
        async with self.engine.connect() as connection:
            self._pending.set(int((await connection.execute(_COUNT)).scalar_one()))
