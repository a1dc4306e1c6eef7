"""The consuming side of the event bus on a real Redis: at-least-once delivery through a consumer
group, retries, dead letters and their replay, lag metrics, shutdown, and throughput."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from common.consumer import EventConsumer, dlq_entries, replay_dlq
from common.events import Event, EventBus, new_event


@dataclass
class Names:
    stream: str
    dlq: str
    group: str


@pytest.fixture
def names() -> Names:
    tag = uuid.uuid4().hex
    return Names(stream=f"test:consumer:{tag}", dlq=f"test:consumer:{tag}:dlq", group=f"group-{tag[:12]}")


@dataclass
class Recorder:
    """A handler that records what it was given and fails on the events ``fails`` picks."""

    fails: Callable[[Event], bool] = lambda event: False
    calls: list[list[Event]] = field(default_factory=list)
    handled: list[Event] = field(default_factory=list)

    async def __call__(self, events: Sequence[Event]) -> None:
        self.calls.append(list(events))
        for event in events:
            if self.fails(event):
                raise RuntimeError(f"cannot handle {event.payload}")
        self.handled.extend(events)

    def handled_numbers(self) -> list[int]:
        return sorted(event.payload["n"] for event in self.handled)


def numbered(count: int, start: int = 0, type_: str = "test.happened") -> list[Event]:
    return [new_event(type_, {"n": n}, producer="test") for n in range(start, start + count)]


def consumer_for(
    redis: Redis, names: Names, handler: Callable[[Sequence[Event]], Awaitable[None]], **kwargs: object
) -> EventConsumer:
    options: dict[str, object] = {"block_ms": 10, "retry_idle_ms": 100, "metrics_interval_s": 0.0}
    options.update(kwargs)
    return EventConsumer(
        redis,
        group=names.group,
        consumer=str(options.pop("consumer", "c1")),
        handler=handler,
        stream=names.stream,
        dlq_stream=names.dlq,
        **options,  # type: ignore[arg-type]
    )


async def drain(consumer: EventConsumer) -> None:
    while await consumer.run_once():
        pass


async def pending(redis: Redis, names: Names) -> int:
    return int((await redis.xpending(names.stream, names.group))["pending"])


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def wait_for_retry() -> None:
    await asyncio.sleep(0.15)  # past the tests' retry_idle_ms of 100


class TestDelivery:
    async def test_every_event_reaches_the_handler_decoded_in_order_and_is_acknowledged(
        self, redis: Redis, names: Names
    ) -> None:
        sent = numbered(2500)
        # Published before the group exists: a new consumer group reads the history kept in the stream.
        await EventBus(redis, stream=names.stream).publish(*sent)
        recorder = Recorder()
        consumer = consumer_for(redis, names, recorder, batch_size=1000)

        await drain(consumer)

        assert recorder.handled == sent
        assert [len(call) for call in recorder.calls] == [1000, 1000, 500]
        assert await pending(redis, names) == 0
        assert sample("streamify_events_consumed_total", group=names.group, type="test.happened") == 2500

    async def test_a_batch_whose_handler_crashed_is_delivered_again_and_handled(
        self, redis: Redis, names: Names
    ) -> None:
        await EventBus(redis, stream=names.stream).publish(*numbered(20))
        broken = True
        recorder = Recorder(fails=lambda event: broken)
        consumer = consumer_for(redis, names, recorder)

        await consumer.run_once()
        assert recorder.handled == []
        assert await pending(redis, names) == 20  # not acknowledged: nothing is lost

        broken = False
        await wait_for_retry()
        await drain(consumer)

        assert recorder.handled_numbers() == list(range(20))
        assert await pending(redis, names) == 0
        assert await redis.xlen(names.dlq) == 0

    async def test_entries_a_dead_consumer_held_are_claimed_and_handled_by_another(
        self, redis: Redis, names: Names
    ) -> None:
        await EventBus(redis, stream=names.stream).publish(*numbered(50))
        entered = asyncio.Event()

        async def hangs(events: Sequence[Event]) -> None:
            entered.set()
            await asyncio.Event().wait()

        dying = consumer_for(redis, names, hangs, consumer="dies")
        task = asyncio.create_task(dying.run_once())
        await entered.wait()
        task.cancel()  # the replica dies with the batch in hand
        with pytest.raises(asyncio.CancelledError):
            await task

        survivor_handler = Recorder()
        survivor = consumer_for(redis, names, survivor_handler, consumer="survives")
        assert await survivor.run_once() == 0  # entries in someone's hands are left alone for a while
        await wait_for_retry()
        await drain(survivor)

        assert survivor_handler.handled_numbers() == list(range(50))
        assert await pending(redis, names) == 0

    async def test_duplicates_reach_the_handler_and_one_deduplicating_by_id_counts_them_once(
        self, redis: Redis, names: Names
    ) -> None:
        first, second = numbered(2)
        bus = EventBus(redis, stream=names.stream)
        # A relay that crashed after XADD sends the same envelope again, possibly much later.
        await bus.publish(first, second, first)
        await bus.publish(first)
        seen: set[uuid.UUID] = set()
        deliveries = 0

        async def deduplicating(events: Sequence[Event]) -> None:
            nonlocal deliveries
            deliveries += len(events)
            seen.update(event.id for event in events)

        await drain(consumer_for(redis, names, deduplicating, batch_size=2))

        assert deliveries == 4
        assert seen == {first.id, second.id}


class TestDeadLetters:
    async def test_a_poison_event_reaches_the_dlq_after_max_attempts_while_its_batch_is_handled(
        self, redis: Redis, names: Names
    ) -> None:
        sent = numbered(100)
        poison = sent[37]
        await EventBus(redis, stream=names.stream).publish(*sent)
        recorder = Recorder(fails=lambda event: event.id == poison.id)
        consumer = consumer_for(redis, names, recorder, max_attempts=3)

        await consumer.run_once()
        assert recorder.handled_numbers() == [n for n in range(100) if n != 37]
        # Halving isolates the poison event in a few calls instead of a hundred.
        assert len(recorder.calls) <= 2 * 7 + 1
        for _ in range(2):
            assert await redis.xlen(names.dlq) == 0
            assert await pending(redis, names) == 1
            await wait_for_retry()
            await consumer.run_once()

        assert sum(1 for call in recorder.calls if call == [poison]) == 3  # once per delivery
        [letter] = await dlq_entries(redis, dlq_stream=names.dlq)
        assert letter.event == poison
        assert letter.attempts == 3
        assert letter.group == names.group
        assert letter.stream == names.stream
        assert "RuntimeError: cannot handle {'n': 37}" in letter.error
        assert await pending(redis, names) == 0
        assert sample("streamify_events_dead_letters_total", group=names.group) == 1
        assert len(recorder.handled) == 99  # nothing else handled twice

    async def test_an_undecodable_entry_goes_straight_to_the_dlq(self, redis: Redis, names: Names) -> None:
        bus = EventBus(redis, stream=names.stream)
        await bus.publish(*numbered(2))
        await redis.xadd(names.stream, {"event": '{"id": "not an envelope"}'})
        await redis.xadd(names.stream, {"something": "else"})
        await bus.publish(*numbered(2, start=2))
        recorder = Recorder()
        consumer = consumer_for(redis, names, recorder, max_attempts=5)

        await drain(consumer)

        assert recorder.handled_numbers() == [0, 1, 2, 3]
        letters = await dlq_entries(redis, dlq_stream=names.dlq)
        assert [letter.raw for letter in letters] == ['{"id": "not an envelope"}', '{"something": "else"}']
        assert all(letter.error.startswith("undecodable") and letter.attempts == 1 for letter in letters)
        assert [letter.event for letter in letters] == [None, None]
        assert await pending(redis, names) == 0

    async def test_an_entry_whose_consumers_keep_dying_reaches_the_dlq(
        self, redis: Redis, names: Names
    ) -> None:
        [event] = numbered(1)
        await EventBus(redis, stream=names.stream).publish(event)

        async def hangs(events: Sequence[Event]) -> None:
            await asyncio.Event().wait()

        # Two deliveries whose handler never returns (a crash, an OOM kill): the attempts are spent.
        for name in ("first", "second"):
            dying = consumer_for(redis, names, hangs, consumer=name, max_attempts=2)
            task = asyncio.create_task(dying.run_once())
            await wait_for_retry()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        recorder = Recorder()
        await consumer_for(redis, names, recorder, consumer="third", max_attempts=2).run_once()

        assert recorder.calls == []
        [letter] = await dlq_entries(redis, dlq_stream=names.dlq)
        assert letter.event == event
        assert letter.attempts == 2
        assert "not handled after 2 deliveries" in letter.error
        assert await pending(redis, names) == 0

    async def test_a_replayed_dead_letter_is_handled_once_the_handler_is_fixed(
        self, redis: Redis, names: Names
    ) -> None:
        sent = numbered(3)
        await EventBus(redis, stream=names.stream).publish(*sent)
        fixed = False
        recorder = Recorder(fails=lambda event: not fixed and event.payload["n"] > 0)
        consumer = consumer_for(redis, names, recorder, max_attempts=1)
        await drain(consumer)
        one, two = await dlq_entries(redis, dlq_stream=names.dlq)
        assert (one.event, two.event) == (sent[1], sent[2])

        fixed = True
        assert await replay_dlq(redis, ids=[one.id, "1-0"], dlq_stream=names.dlq) == 1
        assert await replay_dlq(redis, ids=[one.id], dlq_stream=names.dlq) == 0  # gone: not sent twice
        assert [letter.id for letter in await dlq_entries(redis, dlq_stream=names.dlq)] == [two.id]
        await drain(consumer)
        assert recorder.handled == [sent[0], sent[1]]

        assert await replay_dlq(redis, dlq_stream=names.dlq) == 1
        await drain(consumer)
        assert recorder.handled == sent
        assert await dlq_entries(redis, dlq_stream=names.dlq) == []
        assert await pending(redis, names) == 0


class TestLagMetrics:
    async def test_lag_counts_the_entries_not_delivered_and_the_age_of_the_oldest(
        self, redis: Redis, names: Names
    ) -> None:
        await EventBus(redis, stream=names.stream).publish(*numbered(30))
        await asyncio.sleep(0.3)
        consumer = consumer_for(redis, names, Recorder(), batch_size=10)
        await consumer.ensure_group()

        await consumer.refresh_metrics()
        assert sample("streamify_events_consumer_lag_events", group=names.group) == 30
        age = sample("streamify_events_consumer_lag_seconds", group=names.group)
        assert age is not None and 0.3 <= age < 5

        await consumer.run_once()
        assert sample("streamify_events_consumer_lag_events", group=names.group) == 20
        await drain(consumer)
        assert sample("streamify_events_consumer_lag_events", group=names.group) == 0
        assert sample("streamify_events_consumer_lag_seconds", group=names.group) == 0

    async def test_an_event_waiting_for_a_retry_keeps_the_lag_in_seconds_up(
        self, redis: Redis, names: Names
    ) -> None:
        [event] = numbered(1)
        await EventBus(redis, stream=names.stream).publish(event)
        consumer = consumer_for(redis, names, Recorder(fails=lambda e: True), retry_idle_ms=60_000)
        await consumer.run_once()
        await asyncio.sleep(0.2)

        await consumer.refresh_metrics()
        assert sample("streamify_events_consumer_lag_events", group=names.group) == 0  # delivered...
        age = sample("streamify_events_consumer_lag_seconds", group=names.group)
        assert age is not None and age >= 0.2  # ...but not handled

    async def test_the_dlq_length_is_exported(self, redis: Redis, names: Names) -> None:
        await redis.xadd(names.stream, {"event": "garbage"})
        consumer = consumer_for(redis, names, Recorder())
        await drain(consumer)
        assert sample("streamify_events_dlq_length") == 1


class TestRunning:
    async def test_a_started_consumer_handles_events_as_they_arrive_and_stops_promptly(
        self, redis: Redis, names: Names
    ) -> None:
        recorder = Recorder()
        consumer = consumer_for(redis, names, recorder, block_ms=5000)
        consumer.start()
        await EventBus(redis, stream=names.stream).publish(*numbered(5))
        await eventually(lambda: len(recorder.handled) == 5)

        started = time.monotonic()
        await consumer.aclose()  # waiting in a 5 s blocking read: not waited for
        assert time.monotonic() - started < 1
        assert await pending(redis, names) == 0

    async def test_aclose_finishes_the_batch_being_handled(self, redis: Redis, names: Names) -> None:
        entered, release = asyncio.Event(), asyncio.Event()
        handled: list[Event] = []

        async def slow(events: Sequence[Event]) -> None:
            entered.set()
            await release.wait()
            handled.extend(events)

        consumer = consumer_for(redis, names, slow)
        await EventBus(redis, stream=names.stream).publish(*numbered(10))
        consumer.start()
        await entered.wait()
        closing = asyncio.create_task(consumer.aclose())
        await asyncio.sleep(0.1)
        assert not closing.done()

        release.set()
        await asyncio.wait_for(closing, 5)
        assert len(handled) == 10
        assert await pending(redis, names) == 0

    @pytest.mark.parametrize("linger_ms", [0, 200])
    async def test_with_a_linger_a_trickle_of_events_is_handled_in_a_few_larger_batches(
        self, redis: Redis, names: Names, linger_ms: int
    ) -> None:
        recorder = Recorder()
        consumer = consumer_for(redis, names, recorder, block_ms=1000, linger_ms=linger_ms)
        consumer.start()
        bus = EventBus(redis, stream=names.stream)
        for n in range(40):  # one event every 10 ms, as heartbeat summaries trickle in
            await bus.publish(*numbered(1, start=n))
            await asyncio.sleep(0.01)
        await eventually(lambda: len(recorder.handled) == 40)
        await consumer.aclose()

        assert recorder.handled_numbers() == list(range(40))
        assert await pending(redis, names) == 0
        if linger_ms:
            # 0.4 s of events, a read every 0.2 s at most: a handful of batches.
            assert len(recorder.calls) <= 5, [len(call) for call in recorder.calls]
        else:
            assert len(recorder.calls) >= 20, [len(call) for call in recorder.calls]

    async def test_a_consumer_whose_stream_was_deleted_carries_on_with_a_new_one(
        self, redis: Redis, names: Names
    ) -> None:
        recorder = Recorder()
        consumer = consumer_for(redis, names, recorder, block_ms=50)
        consumer.start()
        bus = EventBus(redis, stream=names.stream)
        await bus.publish(*numbered(1))
        await eventually(lambda: len(recorder.handled) == 1)

        await redis.delete(names.stream)  # FLUSHDB, an operator's mistake: the group goes with it
        await asyncio.sleep(0.2)
        await bus.publish(*numbered(3, start=1))
        await eventually(lambda: len(recorder.handled) == 4)
        await consumer.aclose()
        assert recorder.handled_numbers() == [0, 1, 2, 3]


class TestThroughput:
    async def test_decoding_and_acknowledging_keeps_well_ahead_of_ten_thousand_events_a_second(
        self, redis: Redis, names: Names
    ) -> None:
        total = 30_000
        sent = [
            new_event(
                "playback.heartbeat",
                {
                    "session_id": str(uuid.uuid4()),
                    "viewer_id": str(uuid.uuid4()),
                    "video_id": str(uuid.uuid4()),
                    "creator_id": str(uuid.uuid4()),
                    "position_s": 120.5,
                    "watched_s": 118.0,
                    "duration_s": 600.0,
                    "playing": True,
                    "billed_units": 2,
                    "status": "active",
                },
                producer="streaming",
            )
            for _ in range(total)
        ]
        await EventBus(redis, stream=names.stream).publish(*sent)
        count = 0

        async def no_op(events: Sequence[Event]) -> None:
            nonlocal count
            count += len(events)

        consumer = consumer_for(redis, names, no_op, metrics_interval_s=1.0)
        await consumer.ensure_group()
        started = time.perf_counter()
        await drain(consumer)
        rate = total / (time.perf_counter() - started)

        print(f"\nconsumer: {rate:,.0f} events/s decoded and acknowledged")
        assert count == total
        assert await pending(redis, names) == 0
        # Analytics must ingest 10,000 events/s end to end, its own work included; the consumer
        # alone does several times that on a quiet machine (this floor holds on a busy one too).
        assert rate > 10_000
