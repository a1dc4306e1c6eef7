"""Heartbeats that race: duplicates of one session, and several sessions draining one wallet."""

from __future__ import annotations

import asyncio

from tests.streaming.conftest import PRICE, Player


class TestDuplicateHeartbeatsAtOnce:
    async def test_fifty_concurrent_duplicates_charge_each_unit_once(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]

        for position in (1.5, 2.5, 3.5):
            player.clock.advance(1.0 if position > 1.5 else 1.5)
            replies = await asyncio.gather(*(player.beat(viewer, sid, position) for _ in range(50)))
            assert {reply.status_code for reply in replies} == {200}
            # Every reply is a consistent state: before or after the unit's charge, never beyond.
            units = {reply.json()["billed_minutes"] for reply in replies}
            assert units <= {int(position), int(position) + 1}

        assert await player.charged_units(viewer, sid) == [0, 1, 2, 3]
        assert await player.balance(viewer) == 6 * PRICE
        session = await player.get(viewer, sid)
        assert session["billed_minutes"] == 4 and session["watched_s"] == 3.5


class TestSessionsDrainingOneWallet:
    async def test_exactly_the_affordable_units_are_charged_and_the_wallet_ends_at_zero(self, player: Player):
        viewer = player.user()
        affordable = 10
        await player.top_up(viewer, affordable * PRICE)
        video_id = await player.video()
        sessions = [(await player.started(viewer, video_id))["session_id"] for _ in range(3)]

        replies = []
        for second in range(1, 7):
            player.clock.advance(1.0)
            beats = await asyncio.gather(*(player.beat(viewer, sid, float(second)) for sid in sessions))
            replies += [beat.json() for beat in beats]

        assert all(reply["balance"] >= 0 for reply in replies)
        assert await player.balance(viewer) == 0
        charged = [await player.charged_units(viewer, sid) for sid in sessions]
        assert sum(len(units) for units in charged) == affordable
        # Each session's units are consecutive from 0: none skipped, none twice.
        assert all(units == list(range(len(units))) for units in charged)
        final = [await player.get(viewer, sid) for sid in sessions]
        assert {session["status"] for session in final} == {"payment_required"}
        assert [session["billed_minutes"] for session in final] == [len(units) for units in charged]
        # Watch time is held at what each session paid for.
        assert all(session["watched_s"] <= session["billed_minutes"] for session in final)
