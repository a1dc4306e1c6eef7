"""When a unit cannot be paid: the session waits in payment_required, a top-up lets the same session
continue; when billing cannot be reached: it keeps playing while the same charge is retried, and
after the grace period it fails closed."""

from __future__ import annotations

import uuid

import httpx

from services.streaming.models import PlaybackSession
from tests.streaming.conftest import GRACE_S, HEARTBEAT_S, PRICE, Player


class TestRunningDry:
    async def test_the_unit_that_cannot_be_paid_stops_the_session_and_holds_watch_time(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 3 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]

        reply = await player.play(viewer, sid, seconds=4, step_s=1)

        assert reply["status"] == "payment_required"
        assert reply["billed_minutes"] == 3 and reply["charged_total"] == 3 * PRICE
        assert reply["balance"] == 0
        # Watch time never passes what was paid for, however long the player keeps reporting.
        assert reply["watched_s"] == 3
        later = await player.play(viewer, sid, seconds=4, step_s=2)
        assert later["status"] == "payment_required" and later["watched_s"] == 3
        assert await player.charged_units(viewer, sid) == [0, 1, 2]

    async def test_a_top_up_lets_the_same_session_continue(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 2 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        stopped = await player.play(viewer, sid, seconds=3, step_s=1)
        assert stopped["status"] == "payment_required"

        await player.top_up(viewer, 2 * PRICE)
        resumed = await player.play(viewer, sid, seconds=1, step_s=1)

        assert resumed["status"] == "active"
        assert resumed["billed_minutes"] == 3
        assert resumed["balance"] == PRICE
        assert (await player.get(viewer, sid))["status"] == "active"
        # It keeps going, and runs dry again when the money runs out.
        again = await player.play(viewer, sid, seconds=2, step_s=1)
        assert again["status"] == "payment_required" and again["billed_minutes"] == 4
        assert await player.charged_units(viewer, sid) == [0, 1, 2, 3]
        assert await player.balance(viewer) == 0

    async def test_the_status_and_the_units_reach_the_durable_record(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        await player.play(viewer, sid, seconds=2, step_s=1)
        await player.playback.progress.flush()  # (written in batches; the app flushes every 0.25 s)

        async with player.playback.sessions() as db:
            row = await db.get(PlaybackSession, uuid.UUID(sid))

        assert row is not None and row.status == "payment_required" and row.billed_units == 1


class TestBillingUnreachable:
    async def test_playback_continues_within_grace_and_the_same_charge_is_retried(
        self, player: Player, streaming_without_billing: httpx.AsyncClient
    ):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        position = 0.0

        # Billing goes away (this replica cannot reach it); the viewer keeps watching.
        for _ in range(2):
            player.clock.advance(HEARTBEAT_S)
            position += HEARTBEAT_S
            reply = await player.beat(viewer, sid, position, client=streaming_without_billing)
            assert reply.status_code == 200, reply.text
            assert reply.json()["status"] == "active"
            assert reply.json()["billed_minutes"] == 1

        # Billing is back: every unit watched meanwhile is charged, once, in order.
        player.clock.advance(1)
        position += 1
        back = await player.beat_ok(viewer, sid, position)
        assert back["status"] == "active"
        assert back["billed_minutes"] == 6
        assert await player.charged_units(viewer, sid) == [0, 1, 2, 3, 4, 5]
        assert await player.balance(viewer) == 4 * PRICE

    async def test_after_the_grace_period_a_paid_session_fails_closed_then_recovers(
        self, player: Player, streaming_without_billing: httpx.AsyncClient
    ):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        position, statuses = 0.0, []

        elapsed = 0.0
        while elapsed <= GRACE_S + HEARTBEAT_S:
            player.clock.advance(HEARTBEAT_S)
            elapsed += HEARTBEAT_S
            position += HEARTBEAT_S
            reply = await player.beat(viewer, sid, position, client=streaming_without_billing)
            statuses.append(reply.json()["status"])

        assert statuses[0] == "active"
        assert statuses[-1] == "payment_required"
        held = await player.get(viewer, sid)
        assert held["watched_s"] == held["billed_minutes"] == 1
        # Billing answers again: the next heartbeat pays the pending unit and playback resumes.
        player.clock.advance(1)
        resumed = await player.beat_ok(viewer, sid, position + 1)
        assert resumed["status"] == "active" and resumed["billed_minutes"] == 2
        assert await player.charged_units(viewer, sid) == [0, 1]

    async def test_a_free_video_never_needs_billing(
        self, player: Player, streaming_without_billing: httpx.AsyncClient
    ):
        viewer = player.user()
        video_id = await player.video(price=0)

        started = await player.start(viewer, video_id, client=streaming_without_billing)
        assert started.status_code == 201
        sid = started.json()["session_id"]
        position = 0.0
        for _ in range(5):
            player.clock.advance(HEARTBEAT_S)
            position += HEARTBEAT_S
            reply = await player.beat(viewer, sid, position, client=streaming_without_billing)
            assert reply.json()["status"] == "active"

    async def test_a_paid_video_cannot_start_without_billing(
        self, player: Player, streaming_without_billing: httpx.AsyncClient
    ):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)

        response = await player.start(viewer, await player.video(), client=streaming_without_billing)

        assert response.status_code == 503
        assert response.json()["code"] == "billing_unavailable"
        assert await player.balance(viewer) == 10 * PRICE
