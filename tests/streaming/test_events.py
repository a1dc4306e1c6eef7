"""Streaming's events (docs/events.md): a session's start and end leave through streaming's outbox,
and every accepted heartbeat's summary is added to the stream by the heartbeat script itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from common.events import Event, event_id
from tests.common.eventstream import StreamWatch
from tests.identities import User
from tests.streaming.conftest import DURATION_S, PRICE, UNIT_S, Player


async def watching(player: Player) -> StreamWatch:
    await player.relayed()
    return await StreamWatch(player.redis).mark()


async def published(player: Player, watch: StreamWatch, type_: str, session_id: str) -> list[Event]:
    await player.relayed()
    return await watch.events(type_, session_id=session_id)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def heartbeats_published() -> float:
    return REGISTRY.get_sample_value("streamify_events_published_total", {"source": "streaming"}) or 0.0


class TestSessionStarted:
    async def test_a_paid_start_publishes_session_started_with_the_terms_and_the_duration(
        self, player: Player
    ):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        video_id = await player.video()
        creator_id = (await player.catalog.get_video(video_id))["creator_id"]
        watch = await watching(player)

        session = await player.started(viewer, video_id)

        sid = session["session_id"]
        [event] = await published(player, watch, "playback.session_started", sid)
        assert event.payload == {
            "session_id": sid,
            "viewer_id": str(viewer.id),
            "video_id": video_id,
            "creator_id": creator_id,
            "paid": True,
            "price_per_minute": PRICE,
            "currency": "USD",
            "billing_unit_s": UNIT_S,
            "duration_s": DURATION_S,
        }
        assert (event.producer, event.id) == ("streaming", event_id("playback.session_started", sid))
        assert event.occurred_at == at(player.clock())

    async def test_a_start_refused_for_lack_of_funds_publishes_nothing(self, player: Player):
        viewer = player.user()
        video_id = await player.video()
        watch = await watching(player)

        response = await player.start(viewer, video_id)

        assert response.status_code == 402
        await player.relayed()
        assert await watch.events("playback.session_started", viewer_id=str(viewer.id)) == []


class TestHeartbeatSummaries:
    async def test_each_accepted_heartbeat_publishes_its_cumulative_summary(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        video_id = await player.video()
        creator_id = (await player.catalog.get_video(video_id))["creator_id"]
        sid = (await player.started(viewer, video_id))["session_id"]
        watch = await watching(player)
        counted = heartbeats_published()

        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 2.0)
        first_at = player.clock()
        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 3.5, "paused")
        await player.beat_ok(viewer, sid, 3.5, "paused")  # a retried heartbeat is accepted again

        events = await watch.events("playback.heartbeat", session_id=sid)
        assert [e.payload for e in events] == [
            {
                "session_id": sid,
                "viewer_id": str(viewer.id),
                "video_id": video_id,
                "creator_id": creator_id,
                "position_s": 2.0,
                "watched_s": 2.0,
                "duration_s": DURATION_S,
                "playing": True,
                # As the heartbeat found it: the units it makes due are charged right after.
                "billed_units": 1,
                "status": "active",
            },
            {
                "session_id": sid,
                "viewer_id": str(viewer.id),
                "video_id": video_id,
                "creator_id": creator_id,
                "position_s": 3.5,
                "watched_s": 2.0,
                "duration_s": DURATION_S,
                "playing": False,
                "billed_units": 3,
                "status": "active",
            },
            {
                "session_id": sid,
                "viewer_id": str(viewer.id),
                "video_id": video_id,
                "creator_id": creator_id,
                "position_s": 3.5,
                "watched_s": 2.0,
                "duration_s": DURATION_S,
                "playing": False,
                "billed_units": 3,
                "status": "active",
            },
        ]
        assert all((e.type, e.version, e.producer) == ("playback.heartbeat", 1, "streaming") for e in events)
        assert events[0].occurred_at == at(first_at)
        assert len({e.id for e in events}) == 3
        assert heartbeats_published() - counted == 3

    async def test_refused_heartbeats_publish_nothing(self, player: Player):
        viewer, stranger = player.user(), player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        jti = uuid.uuid4().hex
        revoked = User(id=viewer.id, role="viewer", token=player.minter.token(viewer.id, "viewer", jti=jti))
        await player.redis.set(f"auth:revoked-jti:{jti}", "1", ex=60)
        watch = await watching(player)

        player.clock.advance(2)
        assert (await player.beat(revoked, sid, 2.0)).status_code == 401
        assert (await player.beat(stranger, sid, 2.0)).status_code == 404
        assert (await player.end(viewer, sid)).status_code == 200
        assert (await player.beat_ok(viewer, sid, 2.0))["status"] == "ended"

        assert await watch.events("playback.heartbeat", session_id=sid) == []

    async def test_a_heartbeat_after_the_session_expired_ends_it_instead(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        await player.play(viewer, sid, seconds=4)
        watch = await watching(player)

        player.clock.advance(60)
        assert (await player.beat_ok(viewer, sid, 64.0))["status"] == "ended"

        assert await watch.events("playback.heartbeat", session_id=sid) == []
        [ended] = await published(player, watch, "playback.session_ended", sid)
        assert (ended.payload["reason"], ended.payload["watched_s"]) == ("expired", 4.0)


class TestSessionEnded:
    async def test_ending_publishes_session_ended_with_the_sessions_totals(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        video_id = await player.video()
        creator_id = (await player.catalog.get_video(video_id))["creator_id"]
        session = await player.started(viewer, video_id)
        sid = session["session_id"]
        started_ms = player.clock()
        await player.play(viewer, sid, seconds=2.5)
        watch = await watching(player)

        assert (await player.end(viewer, sid)).status_code == 200
        assert (await player.end(viewer, sid)).status_code == 200  # ending again says nothing new

        [event] = await published(player, watch, "playback.session_ended", sid)
        assert event.payload == {
            "session_id": sid,
            "viewer_id": str(viewer.id),
            "video_id": video_id,
            "creator_id": creator_id,
            "reason": "ended_by_viewer",
            "paid": True,
            "billed_units": 3,
            "charged_total": 3 * PRICE,
            "currency": "USD",
            "watched_s": 2.5,
            "position_s": 2.5,
            "duration_s": DURATION_S,
            "completed": False,
            "started_at": at(started_ms).isoformat(),
            "ended_at": at(player.clock()).isoformat(),
        }
        assert event.id == event_id("playback.session_ended", sid)
