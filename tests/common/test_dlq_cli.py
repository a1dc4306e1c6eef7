"""`streamify events dlq list|replay`: an operator sees why events were dead-lettered and sends
them back once the cause is fixed, against the real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from redis.asyncio import Redis

from common.consumer import EventConsumer, dlq_entries
from common.events import Event, EventBus, new_event
from streamify.cli import main
from tests.conftest import PG_BASE, REDIS_URL


class TestDeadLetterCommands:
    @pytest.fixture
    def names(self) -> tuple[str, str, str]:
        tag = uuid.uuid4().hex
        return f"test:dlqcli:{tag}", f"test:dlqcli:{tag}:dlq", f"group-{tag[:8]}"

    @pytest.fixture
    def env(self, tmp_path: Path) -> dict[str, str]:
        return {
            "REDIS_URL": REDIS_URL,
            "STREAMIFY_DATABASE_URL": PG_BASE,
            "STREAMIFY_DATA_DIR": str(tmp_path),
        }

    async def _invoke(self, args: list[str], env: dict[str, str], dlq: str) -> Result:
        return await asyncio.to_thread(
            CliRunner().invoke, main, ["events", "dlq", *args, "--dlq-stream", dlq], env=env
        )

    async def _dead_letter(self, redis: Redis, names: tuple[str, str, str]) -> tuple[list[Event], set[str]]:
        """Three events whose handler fails, plus one undecodable entry, all dead-lettered; the
        handler is fixed afterwards. Returns the events and the ids of the events handled since."""
        stream, dlq, group = names
        sent = [
            new_event("billing.unit_charged", {"amount": n}, producer="billing", key=f"k:{n}")
            for n in range(3)
        ]
        await EventBus(redis, stream=stream).publish(*sent)
        await redis.xadd(stream, {"event": "{broken"})
        handled: set[str] = set()
        fixed = False

        async def handler(events: Sequence[Event]) -> None:
            if not fixed:
                raise ValueError("ledger unavailable")
            handled.update(str(event.id) for event in events)

        consumer = EventConsumer(
            redis, group=group, consumer="c", handler=handler, stream=stream, dlq_stream=dlq, max_attempts=1
        )
        while await consumer.run_once():
            pass
        fixed = True
        self._consumer = consumer
        return sent, handled

    async def test_list_shows_each_dead_letter_and_why(
        self, redis: Redis, names: tuple[str, str, str], env: dict[str, str]
    ) -> None:
        sent, _ = await self._dead_letter(redis, names)

        result = await self._invoke(["list"], env, names[1])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "FAILED", "AT"]
        assert len(lines) == 1 + 4
        assert all(
            "billing.unit_charged" in line and "ValueError: ledger unavailable" in line for line in lines[1:4]
        )
        assert "(undecodable)" in lines[4] and "undecodable" in lines[4].split("(undecodable)")[1]
        assert "4 of 4 dead letters shown." in result.stderr

        as_json = await self._invoke(["list", "--json", "--count", "2"], env, names[1])
        assert as_json.exit_code == 0, as_json.output
        listed = json.loads(as_json.stdout)
        assert [item["event"]["id"] for item in listed] == [str(event.id) for event in sent[:2]]
        assert listed[0]["group"] == names[2] and listed[0]["attempts"] == 1
        assert listed[0]["event"]["payload"] == {"amount": 0}

    async def test_replay_of_chosen_ids_then_all_puts_them_back_to_be_handled(
        self, redis: Redis, names: tuple[str, str, str], env: dict[str, str]
    ) -> None:
        sent, handled = await self._dead_letter(redis, names)
        letters = await dlq_entries(redis, dlq_stream=names[1])

        chosen = await self._invoke(["replay", letters[0].id, letters[1].id], env, names[1])
        assert chosen.exit_code == 0, chosen.output
        assert "Replayed 2 dead letters." in chosen.stdout
        while await self._consumer.run_once():
            pass
        assert handled == {str(sent[0].id), str(sent[1].id)}
        assert [letter.id for letter in await dlq_entries(redis, dlq_stream=names[1])] == [
            letters[2].id,
            letters[3].id,
        ]

        everything = await self._invoke(["replay", "--all"], env, names[1])
        assert everything.exit_code == 0, everything.output
        assert "Replayed 2 dead letters." in everything.stdout
        while await self._consumer.run_once():
            pass
        assert handled == {str(event.id) for event in sent}
        # The undecodable entry cannot be fixed by a replay: it is dead-lettered again.
        [again] = await dlq_entries(redis, dlq_stream=names[1])
        assert again.raw == "{broken"

    async def test_replay_refuses_unclear_requests_and_reports_unknown_ids(
        self, redis: Redis, names: tuple[str, str, str], env: dict[str, str]
    ) -> None:
        await self._dead_letter(redis, names)
        [first, *_] = await dlq_entries(redis, dlq_stream=names[1])

        nothing = await self._invoke(["replay"], env, names[1])
        assert nothing.exit_code == 2 and "--all" in nothing.output
        both = await self._invoke(["replay", first.id, "--all"], env, names[1])
        assert both.exit_code == 2
        malformed = await self._invoke(["replay", "abc"], env, names[1])
        assert malformed.exit_code == 2 and "not a stream entry id" in malformed.output

        partly = await self._invoke(["replay", first.id, "1-0"], env, names[1])
        assert partly.exit_code == 1
        assert "Replayed 1 dead letter." in partly.stdout
        assert "Not in the dead-letter stream: 1-0" in partly.stderr
        assert len(await dlq_entries(redis, dlq_stream=names[1])) == 3
