"""Sessions whose heartbeats stop end by themselves (the sweeper, or the next look at them); every
ended session leaves the viewer's watch history with where to resume and whether it was finished."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from services.streaming.models import PlaybackSession, WatchHistory
from tests.conftest import migrated_database
from tests.streaming.conftest import (
    DURATION_S,
    HEARTBEAT_S,
    MISSED,
    PRICE,
    Player,
    running_streaming_app,
    streaming_settings,
)

TTL_S = HEARTBEAT_S * MISSED


async def _row(player: Player, sid: str) -> PlaybackSession:
    async with player.playback.sessions() as db:
        row = await db.get(PlaybackSession, uuid.UUID(sid))
    assert row is not None
    return row


async def _ended_events(player: Player, sid: str) -> list[dict[str, Any]]:
    await player.relayed()
    entries = await player.redis.xrange("streamify:events")
    events = [json.loads(fields[b"event"]) for _, fields in entries]
    return [e for e in events if e["type"] == "playback.session_ended" and e["payload"]["session_id"] == sid]


class TestExpiry:
    async def test_the_sweeper_ends_a_session_three_intervals_after_its_last_heartbeat(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        await player.play(viewer, sid, seconds=4)
        last_heartbeat = player.clock()

        player.clock.advance(TTL_S - 0.001)
        await player.playback.sweep_expired()
        assert (await _row(player, sid)).status == "active"
        player.clock.advance(0.001)
        await player.playback.sweep_expired()

        row = await _row(player, sid)
        assert row.status == "ended" and row.end_reason == "expired"
        assert row.billed_units == 5 and row.watched_ms == 4000 and row.position_ms == 4000
        # It ended at its last sign of life.
        assert row.ended_at is not None and round(row.ended_at.timestamp() * 1000) == last_heartbeat
        [event] = await _ended_events(player, sid)
        assert event["payload"]["reason"] == "expired"
        assert event["payload"]["billed_units"] == 5 and event["payload"]["charged_total"] == 5 * PRICE
        session = await player.get(viewer, sid)
        assert session["status"] == "ended" and session["end_reason"] == "expired"

    async def test_a_heartbeat_within_the_window_keeps_it_alive(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]

        player.clock.advance(TTL_S - 0.001)
        reply = await player.beat_ok(viewer, sid, 1)
        player.clock.advance(TTL_S - 0.001)
        await player.playback.sweep_expired()

        assert reply["status"] == "active"
        assert (await player.get(viewer, sid))["status"] == "active"

    async def test_a_heartbeat_after_the_window_finds_it_ended_and_charges_nothing(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]

        player.clock.advance(TTL_S)
        reply = await player.beat_ok(viewer, sid, TTL_S)

        assert reply["status"] == "ended"
        assert reply["billed_minutes"] == 1 and reply["watched_s"] == 0
        assert (await _row(player, sid)).status == "ended"
        assert await player.charged_units(viewer, sid) == [0]
        assert len(await _ended_events(player, sid)) == 1

    async def test_reading_a_stale_session_ends_it(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]

        player.clock.advance(TTL_S + 5)
        session = await player.get(viewer, sid)

        assert session["status"] == "ended" and session["end_reason"] == "expired"
        assert session["master_url"] is None
        assert (await _row(player, sid)).status == "ended"

    async def test_a_session_whose_live_state_was_lost_is_ended_from_its_record(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        sid = (await player.started(viewer, video_id))["session_id"]

        await player.redis.delete(f"streaming:session:{sid}")
        session = await player.get(viewer, sid)

        assert session["status"] == "ended"
        assert (await _row(player, sid)).status == "ended"
        assert [item["video_id"] for item in (await player.history(viewer))["items"]] == [video_id]

    async def test_an_end_recorded_only_in_redis_is_finished_by_the_sweeper(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        await player.play(viewer, sid, seconds=2)
        # As if the process died between the live state's end and the durable write.
        await player.playback.live.end(uuid.UUID(sid), now_ms=player.clock(), force=True)
        assert (await _row(player, sid)).status == "active"

        await player.playback.sweep_expired()

        row = await _row(player, sid)
        assert row.status == "ended" and row.position_ms == 2000
        assert len(await _ended_events(player, sid)) == 1


class TestTheSweeperTask:
    async def test_it_runs_in_the_lifespan(
        self,
        player: Player,
        asgi_client: Callable[..., Any],
        redis_url: str,
        storage_dir: Path,
        catalog_app: FastAPI,
        billing_app: FastAPI,
    ):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        player.clock.advance(TTL_S)

        settings = streaming_settings(
            await migrated_database("streaming"), redis_url, storage_dir, sweep_interval_s=0.05
        )
        async with running_streaming_app(
            asgi_client,
            settings,
            minter=player.minter,
            clock=player.clock,
            catalog_app=catalog_app,
            billing_app=billing_app,
        ):
            for _ in range(100):
                if (await _row(player, sid)).status == "ended":
                    break
                await asyncio.sleep(0.02)

        assert (await _row(player, sid)).status == "ended"


class TestWatchHistory:
    async def test_it_keeps_the_resume_position_and_the_watch_time(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        sid = (await player.started(viewer, video_id))["session_id"]
        await player.play(viewer, sid, seconds=30)

        await player.end(viewer, sid)

        [item] = (await player.history(viewer))["items"]
        assert item["video_id"] == video_id
        assert item["position_s"] == 30 and item["watched_s"] == 30
        assert item["completed"] is False

    async def test_a_video_watched_to_the_end_is_completed_and_stays_so(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        first = (await player.started(viewer, video_id))["session_id"]
        await player.play(viewer, first, seconds=10)
        player.clock.advance(2)
        await player.beat_ok(viewer, first, DURATION_S * 0.96)  # skipped to the credits
        await player.end(viewer, first)
        [finished] = (await player.history(viewer))["items"]

        second = (await player.started(viewer, video_id))["session_id"]
        await player.play(viewer, second, seconds=6)
        await player.end(viewer, second)
        [rewatched] = (await player.history(viewer))["items"]

        assert finished["completed"] is True and finished["watched_s"] == 12
        assert rewatched["completed"] is True
        assert rewatched["position_s"] == 6 and rewatched["watched_s"] == 18

    async def test_most_recent_first_with_a_cursor(self, player: Player):
        viewer = player.user()
        videos = [await player.video(price=0) for _ in range(3)]
        for video_id in videos:
            player.clock.advance(1)
            sid = (await player.started(viewer, video_id))["session_id"]
            await player.end(viewer, sid)

        first = await player.history(viewer, limit=2)
        second = await player.history(viewer, limit=2, cursor=first["next_cursor"])

        assert [item["video_id"] for item in first["items"]] == [videos[2], videos[1]]
        assert [item["video_id"] for item in second["items"]] == [videos[0]]
        assert second["next_cursor"] is None

    async def test_a_video_being_watched_appears_at_once(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)

        await player.started(viewer, video_id)

        [item] = (await player.history(viewer))["items"]
        assert item["video_id"] == video_id and item["position_s"] == 0

    async def test_each_viewer_sees_only_their_own(self, player: Player):
        viewer, other = player.user(), player.user()
        await player.started(viewer, await player.video(price=0))

        assert (await player.history(other))["items"] == []

    async def test_a_forged_cursor_is_422(self, player: Player):
        response = await player.client.get(
            "/users/me/history", params={"cursor": "not-a-cursor"}, headers=player.user().headers
        )

        assert response.status_code == 422
        assert response.json()["code"] == "invalid_cursor"

    async def test_history_survives_in_the_database(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        sid = (await player.started(viewer, video_id))["session_id"]
        await player.play(viewer, sid, seconds=4)
        await player.end(viewer, sid)

        async with player.playback.sessions() as db:
            rows = (
                await db.scalars(select(WatchHistory).where(col(WatchHistory.viewer_id) == viewer.id))
            ).all()

        assert [(str(r.video_id), r.position_ms, r.last_session_id) for r in rows] == [
            (video_id, 4000, uuid.UUID(sid))
        ]
