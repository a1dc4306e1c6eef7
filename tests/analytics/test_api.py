"""What creators, viewers and admins read, and who may read what."""

from __future__ import annotations

import uuid

from common.events import EventBus
from services.analytics.settings import AnalyticsSettings
from services.analytics.tasks import event_consumer
from tests.analytics.conftest import Analytics, History


async def watched(
    analytics: Analytics,
    history: History,
    video: uuid.UUID,
    creator: uuid.UUID,
    *,
    position_s: float,
    viewer: uuid.UUID | None = None,
    duration_s: float = 100.0,
) -> uuid.UUID:
    """One session of ``video`` that played up to ``position_s`` and ended."""
    viewer = viewer or uuid.uuid4()
    sid = uuid.uuid4()
    ids = (sid, video, viewer, creator)
    batch = [history.started(*ids, duration_s=duration_s, t=0)]
    if position_s:
        batch.append(
            history.heartbeat(
                *ids, watched_s=position_s, position_s=position_s, duration_s=duration_s, t=position_s
            )
        )
    batch.append(
        history.ended(
            *ids,
            watched_s=position_s,
            position_s=position_s,
            duration_s=duration_s,
            completed=position_s >= 95,
            t=position_s + 1,
        )
    )
    await analytics.ingest(batch)
    return viewer


class TestRetention:
    async def test_the_curve_is_the_share_of_sessions_still_watching_at_each_percent(
        self, analytics: Analytics, history: History
    ):
        creator = analytics.user("creator")
        video = uuid.uuid4()
        await analytics.ingest(
            [history.video_created(video, creator.id), history.video_ready(video, creator.id, duration_s=100)]
        )
        for position in (100, 50, 10, 0):
            await watched(analytics, history, video, creator.id, position_s=position)

        data = await analytics.get(
            f"/analytics/videos/{video}",
            creator,
            **{"from": history.start.date(), "to": history.start.date()},
        )

        share = {point["percent"]: point["share"] for point in data["retention"]}
        assert len(share) == 101
        assert (share[0], share[10], share[11], share[50], share[51], share[100]) == (
            1.0,
            0.75,
            0.5,
            0.5,
            0.25,
            0.25,
        )
        day = data["daily"][0]
        # the never-played session is a session but not a view (under the view threshold)
        assert (day["sessions"], day["views"], day["watch_minutes"]) == (4, 3, round(160 / 60, 3))


class TestCreatorOverview:
    async def test_totals_series_and_videos_of_the_callers_channel(
        self, analytics: Analytics, history: History
    ):
        creator = analytics.user("creator")
        first, second = uuid.uuid4(), uuid.uuid4()
        await analytics.ingest(
            [
                history.video_created(first, creator.id, title="First"),
                history.video_created(second, creator.id, title="Second"),
            ]
        )
        viewer = await watched(analytics, history, first, creator.id, position_s=30)
        await watched(analytics, history, first, creator.id, position_s=60, viewer=viewer)
        await watched(analytics, history, second, creator.id, position_s=20)
        charge = history.charged(uuid.uuid4(), 0, first, viewer, creator.id, amount=100, fee=20, t=5)
        await analytics.ingest(
            [charge, history.charged(uuid.uuid4(), 0, second, viewer, creator.id, amount=50, fee=10, t=5)]
        )
        await analytics.ingest([history.refunded(charge, amount=50, fee=10, t=9)])
        day = history.start.date()

        data = await analytics.get("/analytics/creator/overview", creator, **{"from": day, "to": day})

        assert data["totals"]["views"] == 3
        assert data["totals"]["unique_viewers"] == 2  # one viewer watched the first video twice
        assert data["totals"]["revenue"] == (80 - 40) + 40
        assert data["totals"]["watch_minutes"] == round(110 / 60, 3)
        assert [v["title"] for v in data["videos"]] == ["First", "Second"]
        assert data["from"] == data["to"] == day.isoformat()

    async def test_a_creator_with_no_audience_gets_zeros_for_every_day(
        self, analytics: Analytics, history: History
    ):
        creator = analytics.user("creator")
        day = history.start.date()
        data = await analytics.get(
            "/analytics/creator/overview", creator, **{"from": day, "to": day.replace(day=day.day)}
        )
        assert data["totals"]["views"] == 0 and len(data["daily"]) == 1 and data["videos"] == []


class TestWhoMayRead:
    async def test_creators_cannot_read_another_creators_video(self, analytics: Analytics, history: History):
        owner, other, admin = analytics.user("creator"), analytics.user("creator"), analytics.user("admin")
        video = uuid.uuid4()
        await watched(analytics, history, video, owner.id, position_s=30)

        refused = await analytics.client.get(f"/analytics/videos/{video}", headers=other.headers)
        assert refused.status_code == 404
        assert refused.json()["code"] == "video_not_found"
        assert (
            await analytics.client.get(f"/analytics/videos/{video}", headers=admin.headers)
        ).status_code == 200
        assert (
            await analytics.client.get(f"/analytics/videos/{video}", headers=owner.headers)
        ).status_code == 200

    async def test_another_creators_views_do_not_show_in_my_overview(
        self, analytics: Analytics, history: History
    ):
        owner, other = analytics.user("creator"), analytics.user("creator")
        await watched(analytics, history, uuid.uuid4(), owner.id, position_s=30)
        day = history.start.date()
        data = await analytics.get("/analytics/creator/overview", other, **{"from": day, "to": day})
        assert data["totals"]["views"] == 0

    async def test_viewers_have_no_creator_overview(self, analytics: Analytics):
        response = await analytics.client.get("/analytics/creator/overview", headers=analytics.user().headers)
        assert response.status_code == 403
        assert response.json()["code"] == "not_a_creator"

    async def test_platform_stats_are_for_admins_only(self, analytics: Analytics, history: History):
        day = history.start.date()
        creator = analytics.user("creator")
        await analytics.ingest(
            [history.video_created(uuid.uuid4(), creator.id), history.video_failed(uuid.uuid4(), creator.id)]
        )
        viewer = await watched(analytics, history, uuid.uuid4(), creator.id, position_s=30)
        await watched(analytics, history, uuid.uuid4(), creator.id, position_s=10, viewer=viewer)

        for role in ("viewer", "creator"):
            response = await analytics.client.get("/analytics/platform", headers=analytics.user(role).headers)
            assert response.status_code == 403
        data = await analytics.get("/analytics/platform", analytics.user("admin"), **{"from": day, "to": day})
        assert data["totals"] == {
            "active_viewers": 1,
            "sessions": 2,
            "watch_minutes": round(40 / 60, 3),
            "revenue_gross": 0,
            "platform_fee": 0,
            "uploads": 1,
            "transcode_failures": 1,
        }

    async def test_unauthenticated_and_bad_ranges_get_clear_errors(self, analytics: Analytics):
        assert (await analytics.client.get("/analytics/me")).status_code == 401
        creator = analytics.user("creator")
        backwards = await analytics.client.get(
            "/analytics/creator/overview",
            headers=creator.headers,
            params={"from": "2031-02-02", "to": "2031-02-01"},
        )
        assert backwards.status_code == 422 and backwards.json()["code"] == "invalid_date_range"
        too_long = await analytics.client.get(
            "/analytics/creator/overview",
            headers=creator.headers,
            params={"from": "2020-01-01", "to": "2031-01-01"},
        )
        assert too_long.status_code == 422 and too_long.json()["code"] == "date_range_too_long"
        garbage = await analytics.client.get(
            "/analytics/creator/overview", headers=creator.headers, params={"from": "yesterday"}
        )
        assert garbage.status_code == 422


class TestViewerStats:
    async def test_minutes_money_and_finished_videos(self, analytics: Analytics, history: History):
        viewer = analytics.user()
        creator, video = uuid.uuid4(), uuid.uuid4()
        await watched(analytics, history, video, creator, position_s=100, viewer=viewer.id)
        await watched(analytics, history, video, creator, position_s=100, viewer=viewer.id)
        await watched(analytics, history, uuid.uuid4(), creator, position_s=30, viewer=viewer.id)
        await analytics.ingest(
            [history.charged(uuid.uuid4(), 0, video, viewer.id, creator, amount=70, fee=14, t=3)]
        )

        data = await analytics.get("/analytics/me", viewer)

        assert (data["sessions"], data["spent"], data["videos_finished"]) == (3, 70, 1)
        assert data["watch_minutes"] == round(230 / 60, 3)


class TestThroughTheBus:
    async def test_events_published_on_the_stream_reach_the_api(
        self, analytics: Analytics, history: History, redis
    ):
        stream = f"test:analytics:{uuid.uuid4().hex}"
        settings = AnalyticsSettings(**{**analytics.app.state.settings.model_dump(), "event_stream": stream})
        consumer = event_consumer(redis, analytics.app.state.ingest, settings)
        creator = analytics.user("creator")
        video, viewer, sid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        ids = (sid, video, viewer, creator.id)
        events = [
            history.started(*ids, duration_s=60, t=0),
            history.heartbeat(*ids, watched_s=12, position_s=12, duration_s=60, t=12),
            history.charged(sid, 0, video, viewer, creator.id, amount=30, fee=6, t=1),
        ]
        bus = EventBus(redis, stream=stream)
        await bus.publish(*events)
        await bus.publish(*events)  # delivered twice: counted once

        await consumer.ensure_group()
        while await consumer.run_once():
            pass

        data = await analytics.get(
            f"/analytics/videos/{video}",
            creator,
            **{"from": history.start.date(), "to": history.start.date()},
        )
        assert (data["totals"]["views"], data["totals"]["revenue"]) == (1, 24)
        assert data["totals"]["watch_minutes"] == round(12 / 60, 3)
