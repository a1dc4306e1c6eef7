"""Reading the event stream with a Redis consumer group: at-least-once, bounded retries, dead letters.

A consumer reads batches with ``XREADGROUP`` and acknowledges them (``XACK``) only after its handler
returned, so an event is never lost to a crash: whatever a consumer took and did not acknowledge
stays in the group's pending list, and once it has been idle for ``retry_idle_ms`` any consumer of
the group claims it (``XCLAIM``) and handles it again; that is how a dead replica's batch is
finished by the others. Handlers therefore see events more than once and must be idempotent
(deduplicate by ``Event.id``).

One bad event must not hold up the rest. When the batch handler raises, the batch is split in
halves and each half handled on its own, down to single events (a handful of calls to isolate one
poison event in a thousand, instead of a thousand calls); the events that still fail stay pending
for a later retry. An entry whose Redis delivery count reaches ``max_attempts``, or that cannot be
decoded at all, is moved to the dead-letter stream ``streamify:events:dlq`` and acknowledged, in
one transaction. Operators list and replay dead letters (``dlq_entries``, ``replay_dlq``,
``streamify events dlq list|replay``).

Throughput: per batch there is one read and one acknowledgement round trip whatever the batch size;
the only per-event work is decoding the envelope and counting its type. Stale entries and lag
metrics are looked at on a timer, not per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter as TypeCounts
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.events import DEFAULT_MAX_LEN, EVENT_STREAM, Event, decode_event

DLQ_STREAM = "streamify:events:dlq"
# Dead letters are few unless something is badly wrong; the bound only keeps a runaway failure from
# filling Redis (the dlq length gauge and its alert say so long before).
DLQ_MAX_LEN = 100_000
_ERROR_CHARS = 2000

Handler = Callable[[Sequence[Event]], Awaitable[None]]
EntryId = bytes | str
Fields = Mapping[Any, Any]
Entry = tuple[EntryId, Fields]

log = structlog.get_logger("events.consumer")

EVENTS_CONSUMED = Counter(
    "streamify_events_consumed_total",
    "Events a consumer group handled (acknowledged after its handler returned), by type.",
    ["group", "type"],
)
CONSUMER_LAG_EVENTS = Gauge(
    "streamify_events_consumer_lag_events",
    "Entries in the event stream not yet delivered to the consumer group (XINFO GROUPS lag).",
    ["group"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "streamify_events_consumer_lag_seconds",
    "Age of the oldest event the consumer group has not handled yet; 0 when caught up.",
    ["group"],
)
DEAD_LETTERS = Counter(
    "streamify_events_dead_letters_total",
    "Events a consumer group gave up on and moved to the dead-letter stream.",
    ["group"],
)
DLQ_LENGTH = Gauge("streamify_events_dlq_length", "Entries waiting in the dead-letter stream.")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_id_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp Redis put in an auto-generated stream id (``<ms>-<seq>``)."""
    return int(_text(entry_id).partition("-")[0])


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_ERROR_CHARS]


def _raw_event(fields: Fields | None) -> bytes | str:
    """The entry's ``event`` field as it was; for an entry without one, all its fields as JSON, so
    the operator still sees what arrived."""
    fields = fields or {}
    raw = fields.get(b"event", fields.get("event"))
    if raw is not None:
        return bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else str(raw)
    readable = {
        _text(key) if isinstance(key, bytes | str) else str(key): (
            value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        )
        for key, value in fields.items()
    }
    return json.dumps(readable)


@dataclass(frozen=True, slots=True)
class _Failure:
    entry_id: EntryId
    fields: Fields | None
    error: str
    attempts: int


class EventConsumer:
    """One member of a consumer group on the event stream.

    ``handler`` gets batches of decoded events; it must be idempotent (events are redelivered after
    crashes and retries) and either apply the whole batch or raise. ``consumer`` names this member
    within ``group`` (stable per replica is best, so a restarted replica picks its own entries up
    sooner, but any unique name works: others claim what a vanished member left).

    ``retry_idle_ms`` is how long an unacknowledged entry waits before it is handled again; it must
    be longer than a healthy handler ever takes for one batch, or busy entries get handled twice.
    The Redis client's ``socket_timeout`` (if any) must exceed ``block_ms``.

    ``linger_ms``: after a batch smaller than ``batch_size``, the background loop waits this long
    before reading again, so a steady trickle of events arrives in fewer, larger batches (each batch
    costs its handler a few database round trips whatever its size); events wait at most that much
    longer. A full batch is followed by the next read at once.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        consumer: str,
        handler: Handler,
        stream: str = EVENT_STREAM,
        batch_size: int = 1000,
        block_ms: int = 1000,
        max_attempts: int = 5,
        retry_idle_ms: int = 10_000,
        dlq_stream: str = DLQ_STREAM,
        metrics_interval_s: float = 1.0,
        linger_ms: int = 0,
    ) -> None:
        if min(max_attempts, batch_size, block_ms, retry_idle_ms) < 1:
            raise ValueError("max_attempts, batch_size, block_ms and retry_idle_ms must be positive")
        if linger_ms < 0:
            raise ValueError("linger_ms must not be negative")
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.stream = stream
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_attempts = max_attempts
        self.retry_idle_ms = retry_idle_ms
        self.dlq_stream = dlq_stream
        self.metrics_interval_s = metrics_interval_s
        self.linger_ms = linger_ms
        self._group_ready = False
        self._next_claim = 0.0
        self._next_metrics = 0.0
        # The last error of entries that failed here and wait for a retry, for the dead letter's
        # reason if they end up there (bounded: a retry on another replica never pops them here).
        self._errors: dict[EntryId, str] = {}
        self._consumed: dict[str, Any] = {}
        self._dead_letters = DEAD_LETTERS.labels(group)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # True while the loop waits (blocking read, back-off): cancelling then loses no work.
        self._waiting = False

    # -- Lifecycle --------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and the group if missing; a new group starts at the oldest entry still
        in the stream, so a new consumer (a fresh analytics) reads the history that is kept."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def start(self) -> None:
        """Consume in a background task until ``aclose``."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"event-consumer:{self.group}")

    async def aclose(self) -> None:
        """Stop consuming: a batch being handled is finished and acknowledged first; a read still
        waiting for entries is abandoned (anything it was handed stays pending for a retry)."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        if self._waiting:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        backoff_s = 0.1
        while not self._closing:
            try:
                delivered = await self.run_once()
                backoff_s = 0.1
                if 0 < delivered < self.batch_size and self.linger_ms and not self._closing:
                    self._waiting = True
                    try:
                        await asyncio.sleep(self.linger_ms / 1000)
                    finally:
                        self._waiting = False
            except Exception:
                log.exception("event_consumer_failed", group=self.group, consumer=self.consumer)
                self._waiting = True
                try:
                    await asyncio.sleep(backoff_s)
                finally:
                    self._waiting = False
                backoff_s = min(backoff_s * 2, 5.0)

    # -- One round --------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Retry stale pending entries when due, then read and handle one batch of new entries.

        Returns how many entries were delivered to this consumer in the round (handled, dead-lettered
        or left pending after failing), so ``while await consumer.run_once(): ...`` drains the stream.
        """
        try:
            return await self._round()
        except ResponseError:
            # Mostly NOGROUP, "no such key" or UNBLOCKED: the stream or the group was deleted under
            # us (FLUSHDB, XGROUP DESTROY). Making sure the group exists costs one call: recreate.
            self._group_ready = False
            raise

    async def _round(self) -> int:
        if not self._group_ready:
            await self.ensure_group()
        delivered = 0
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.retry_idle_ms / 2000
            delivered += await self._retry_stale()
        if self._closing:  # aclose came while retries were handled: do not take another batch
            return delivered
        # Retried work means there may be more to do at once: do not block on top of it.
        block = self.block_ms if delivered == 0 else None
        self._waiting = True
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.batch_size, block=block
            )
        finally:
            self._waiting = False
        if reply:
            entries: list[Entry] = reply[0][1]
            delivered += len(entries)
            await self._process(entries)
        if time.monotonic() >= self._next_metrics:
            self._next_metrics = time.monotonic() + self.metrics_interval_s
            await self.refresh_metrics()
        return delivered

    async def _retry_stale(self) -> int:
        """Claim entries idle longer than ``retry_idle_ms`` (failed here or elsewhere, or left by a
        consumer that died) and handle them again, or dead-letter them when out of attempts."""
        stale = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", self.batch_size, idle=self.retry_idle_ms
        )
        if not stale:
            return 0
        delivered = {item["message_id"]: int(item["times_delivered"]) for item in stale}
        # min_idle_time makes the claim exclusive: a replica that claimed first reset the idle time.
        claimed: list[Entry] = await self.redis.xclaim(
            self.stream, self.group, self.consumer, self.retry_idle_ms, list(delivered)
        )
        exhausted: list[_Failure] = []
        retry: list[Entry] = []
        attempts: dict[EntryId, int] = {}
        for entry_id, fields in claimed:
            count = delivered.get(entry_id, self.max_attempts)
            if count >= self.max_attempts:
                reason = self._errors.pop(entry_id, None) or (
                    f"not handled after {count} deliveries (the consumer stopped or timed out)"
                )
                exhausted.append(_Failure(entry_id, fields, reason, count))
            else:
                retry.append((entry_id, fields))
                attempts[entry_id] = count + 1  # XCLAIM counted this delivery
        if exhausted:
            await self._settle([], exhausted)
        if retry:
            log.info("events_retrying", group=self.group, events=len(retry))
            await self._process(retry, attempts)
        return len(claimed)

    async def _process(self, entries: Sequence[Entry], attempts: Mapping[EntryId, int] | None = None) -> None:
        events: list[Event] = []
        decoded: list[Entry] = []
        dead: list[_Failure] = []
        for entry in entries:
            try:
                events.append(decode_event(entry[1]))
            except Exception as exc:  # nothing a retry could fix
                count = attempts.get(entry[0], 1) if attempts else 1
                dead.append(_Failure(entry[0], entry[1], f"undecodable: {exc}", count))
                continue
            decoded.append(entry)
        if not events:
            await self._settle([], dead)
            return
        try:
            await self.handler(events)
        except Exception as exc:
            log.warning("event_batch_failed", group=self.group, events=len(events), error=_describe(exc))
            handled, failed = await self._isolate(events, 0, len(events), exc)
            retrying = 0
            for index, error in failed:
                entry_id, fields = decoded[index]
                count = attempts.get(entry_id, 1) if attempts else 1
                if count >= self.max_attempts:
                    dead.append(_Failure(entry_id, fields, error, count))
                else:
                    retrying += 1
                    self._remember_error(entry_id, error)
            if retrying:
                log.warning("events_left_for_retry", group=self.group, events=retrying)
            if dead:  # in stream order, which a replay keeps
                position = {entry[0]: index for index, entry in enumerate(entries)}
                dead.sort(key=lambda failure: position[failure.entry_id])
            await self._settle([decoded[i][0] for i in handled], dead)
            self._count_consumed([events[i] for i in handled])
            return
        await self._settle([entry[0] for entry in decoded], dead)
        self._count_consumed(events)

    async def _isolate(
        self, events: list[Event], lo: int, hi: int, error: Exception
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """``events[lo:hi]`` failed together with ``error``: handle each half on its own, down to
        single events. Returns the indexes handled, and those that failed alone with their error."""
        if hi - lo == 1:
            # Debug only: a systemic failure (database down) fails every event of every batch; the
            # batch's warning and each dead letter's error already tell the story.
            log.debug(
                "event_failed",
                group=self.group,
                event_id=str(events[lo].id),
                type=events[lo].type,
                error=_describe(error),
            )
            return [], [(lo, _describe(error))]
        handled: list[int] = []
        failed: list[tuple[int, str]] = []
        mid = (lo + hi) // 2
        for start, end in ((lo, mid), (mid, hi)):
            try:
                await self.handler(events[start:end])
            except Exception as exc:
                done, bad = await self._isolate(events, start, end, exc)
                handled += done
                failed += bad
            else:
                handled.extend(range(start, end))
        return handled, failed

    def _remember_error(self, entry_id: EntryId, error: str) -> None:
        if len(self._errors) >= 10_000:
            self._errors.pop(next(iter(self._errors)))
        self._errors[entry_id] = error

    async def _settle(self, handled: Sequence[EntryId], dead: Sequence[_Failure]) -> None:
        """Acknowledge handled entries; move dead ones to the DLQ and acknowledge them, atomically
        (a crash cannot leave an entry both dead-lettered and pending)."""
        if dead:
            async with self.redis.pipeline(transaction=True) as pipe:
                for failure in dead:
                    pipe.xadd(
                        self.dlq_stream,
                        {
                            "event": _raw_event(failure.fields),
                            "error": failure.error[:_ERROR_CHARS],
                            "group": self.group,
                            "consumer": self.consumer,
                            "attempts": failure.attempts,
                            "original_id": failure.entry_id,
                            "stream": self.stream,
                        },
                        maxlen=DLQ_MAX_LEN,
                        approximate=True,
                    )
                pipe.xack(self.stream, self.group, *handled, *(failure.entry_id for failure in dead))
                await pipe.execute()
            self._dead_letters.inc(len(dead))
            for failure in dead:
                self._errors.pop(failure.entry_id, None)
                log.error(
                    "event_dead_lettered",
                    group=self.group,
                    entry_id=_text(failure.entry_id),
                    attempts=failure.attempts,
                    error=failure.error[:500],
                )
        elif handled:
            await self.redis.xack(self.stream, self.group, *handled)
        if self._errors:  # entries that failed before and were handled in a retry
            for entry_id in handled:
                self._errors.pop(entry_id, None)

    def _count_consumed(self, events: Sequence[Event]) -> None:
        for type_, count in TypeCounts(event.type for event in events).items():
            child = self._consumed.get(type_)
            if child is None:
                child = self._consumed[type_] = EVENTS_CONSUMED.labels(self.group, type_)
            child.inc(count)

    # -- Metrics ----------------------------------------------------------------------------------

    async def refresh_metrics(self) -> None:
        """Lag (in entries and in seconds) of this group, and the dead-letter stream's length."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.xlen(self.dlq_stream)
            groups, pending, dlq_length = await pipe.execute()
        DLQ_LENGTH.set(dlq_length)
        info = next((g for g in groups if _text(g["name"]) == self.group), None)
        if info is None:
            return
        # Redis cannot always count the lag (entries deleted mid-stream): then the gauge keeps its value.
        lag = info.get("lag")
        if lag is not None:
            CONSUMER_LAG_EVENTS.labels(self.group).set(lag)
        oldest: list[int] = []
        if pending["pending"]:
            oldest.append(_stream_id_ms(pending["min"]))
        if lag is None or lag > 0:
            after = _text(info["last-delivered-id"])
            first_new = await self.redis.xrange(self.stream, min=f"({after}", count=1)
            if first_new:
                oldest.append(_stream_id_ms(first_new[0][0]))
        age_s = max(0.0, time.time() - min(oldest) / 1000) if oldest else 0.0
        CONSUMER_LAG_SECONDS.labels(self.group).set(age_s)


# -- Dead letters, for operators ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry of the dead-letter stream: the original event as it was, and why it is there."""

    id: str
    original_id: str
    stream: str
    group: str
    consumer: str
    attempts: int
    error: str
    raw: str
    failed_at: datetime

    @classmethod
    def from_entry(cls, entry_id: EntryId, fields: Fields) -> DeadLetter:
        values = {_text(key): _text(value) for key, value in fields.items()}
        return cls(
            id=_text(entry_id),
            original_id=values.get("original_id", ""),
            stream=values.get("stream", EVENT_STREAM),
            group=values.get("group", ""),
            consumer=values.get("consumer", ""),
            attempts=int(values.get("attempts") or 0),
            error=values.get("error", ""),
            raw=values.get("event", ""),
            failed_at=datetime.fromtimestamp(_stream_id_ms(entry_id) / 1000, UTC),
        )

    @property
    def event(self) -> Event | None:
        """The decoded event, or None when it is what could not be decoded."""
        try:
            return Event.model_validate_json(self.raw)
        except ValueError:
            return None

    def as_dict(self) -> dict[str, Any]:
        try:
            original: Any = json.loads(self.raw)
        except ValueError:
            original = self.raw
        return {
            "id": self.id,
            "failed_at": self.failed_at.isoformat().replace("+00:00", "Z"),
            "stream": self.stream,
            "original_id": self.original_id,
            "group": self.group,
            "consumer": self.consumer,
            "attempts": self.attempts,
            "error": self.error,
            "event": original,
        }


async def dlq_entries(
    redis: Redis, *, count: int = 100, ids: Sequence[str] | None = None, dlq_stream: str = DLQ_STREAM
) -> list[DeadLetter]:
    """The oldest ``count`` dead letters (the order a replay sends them in), or those of ``ids``
    that are there."""
    if ids is None:
        rows = await redis.xrange(dlq_stream, count=count)
    else:
        rows = await _dead_letters_by_id(redis, ids, dlq_stream)
    return [DeadLetter.from_entry(entry_id, fields) for entry_id, fields in rows]


async def _dead_letters_by_id(redis: Redis, ids: Sequence[str], dlq_stream: str) -> list[Entry]:
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(dlq_stream, min=entry_id, max=entry_id)
        return [row for rows in await pipe.execute() for row in rows]


async def dlq_length(redis: Redis, *, dlq_stream: str = DLQ_STREAM) -> int:
    return int(await redis.xlen(dlq_stream))


# Delete first, add only if the delete happened: two operators replaying the same entry at once
# send it back once.
_REPLAY_ONE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2])
return 1
"""
_REPLAY_PAGE = 1000


async def replay_dlq(
    redis: Redis,
    *,
    ids: Sequence[str] | None = None,
    dlq_stream: str = DLQ_STREAM,
    max_len: int = DEFAULT_MAX_LEN,
) -> int:
    """Put dead letters back on the stream they came from (as new entries, so every group sees them
    again and handles them like any event; groups that had handled them drop them by id) and remove
    them from the dead-letter stream. All of them, or only ``ids``; returns how many were replayed
    (ids that are not in the dead-letter stream are skipped)."""
    script = redis.register_script(_REPLAY_ONE)
    replayed = 0

    async def replay(rows: Sequence[Entry]) -> int:
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id, fields in rows:
                letter = DeadLetter.from_entry(entry_id, fields)
                await script(
                    keys=[dlq_stream, letter.stream], args=[letter.id, letter.raw, max_len], client=pipe
                )
            return sum(await pipe.execute())

    if ids is not None:
        found = await _dead_letters_by_id(redis, ids, dlq_stream)
        return await replay(found) if found else 0
    # Only what is there now: entries dead-lettered again while the replay runs wait for the next one.
    last = await redis.xrevrange(dlq_stream, count=1)
    if not last:
        return 0
    until = _text(last[0][0])
    while True:
        # Replayed entries are deleted, so each page starts at the (new) beginning.
        rows = await redis.xrange(dlq_stream, min="-", max=until, count=_REPLAY_PAGE)
        if not rows:
            return replayed
        replayed += await replay(rows)
