"""Rollups against a plain reference computation, whatever order and how often events arrive."""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.events import Event
from services.analytics.tasks import backfill
from tests.analytics.conftest import Analytics, History, fresh_day

THRESHOLD_S = 5.0
PRICE = 10
FEE = 2


@dataclass
class SessionPlan:
    video: int
    viewer: int
    steps: list[tuple[float, float]]  # (seconds played, extra forward seek) per heartbeat
    ends: bool
    units: int


plans = st.lists(
    st.builds(
        SessionPlan,
        video=st.integers(0, 2),
        viewer=st.integers(0, 2),
        steps=st.lists(st.tuples(st.floats(0, 20), st.sampled_from([0.0, 0.0, 15.0, 40.0])), max_size=6),
        ends=st.booleans(),
        units=st.integers(0, 3),
    ),
    min_size=1,
    max_size=6,
)


def build(history: History, plan: list[SessionPlan]) -> tuple[list[Event], dict[str, Any]]:
    """The events of ``plan`` and what a plain computation over them says the rollups are."""
    creators = [uuid.uuid4(), uuid.uuid4()]
    videos = [uuid.uuid4() for _ in range(3)]
    owner = {v: creators[i % 2] for i, v in enumerate(videos)}
    durations = {videos[0]: 60.0, videos[1]: 120.0, videos[2]: 30.0}
    viewers = [uuid.uuid4() for _ in range(3)]
    events = [history.video_created(v, owner[v]) for v in videos]
    expected: dict[str, Any] = {
        "video_daily": defaultdict(lambda: [0, 0, set(), 0.0, 0, 0]),
        "retention": defaultdict(lambda: [0] * 101),
        "viewers": defaultdict(lambda: [0, 0.0, 0, set()]),
        "videos": videos,
        "viewer_ids": viewers,
    }
    platform: dict[str, Any] = {
        "sessions": 0,
        "viewers": set(),
        "watched": 0.0,
        "gross": 0,
        "fee": 0,
        "uploads": 3,
    }
    for session_plan in plan:
        sid = uuid.uuid4()
        video, viewer = videos[session_plan.video], viewers[session_plan.viewer]
        creator, duration = owner[video], durations[video]
        ids = (sid, video, viewer, creator)
        events.append(history.started(*ids, duration_s=duration, t=1))
        watched = position = 0.0
        t = 1.0
        for played, seek in session_plan.steps:
            t += played + 1
            watched += played
            position = min(duration, position + played + seek)
            events.append(
                history.heartbeat(*ids, watched_s=watched, position_s=position, duration_s=duration, t=t)
            )
        completed = position >= 0.95 * duration
        if session_plan.ends:
            events.append(
                history.ended(
                    *ids,
                    watched_s=watched,
                    position_s=position,
                    duration_s=duration,
                    completed=completed,
                    t=t + 1,
                )
            )
        for unit in range(session_plan.units):
            events.append(history.charged(sid, unit, video, viewer, creator, amount=PRICE, fee=FEE, t=t + 2))

        row: list[Any] = expected["video_daily"][video]
        row[0] += 1
        if watched >= THRESHOLD_S:
            row[1] += 1
            row[2].add(viewer)
        row[3] += watched
        row[4] += session_plan.units * (PRICE - FEE)
        row[5] += session_plan.units * PRICE
        pct = 100 if completed else min(100, math.floor(position / duration * 100))
        for p in range(pct + 1):
            expected["retention"][video][p] += 1
        stats: list[Any] = expected["viewers"][viewer]
        stats[0] += 1
        stats[1] += watched
        stats[2] += session_plan.units * PRICE
        if completed:
            stats[3].add(video)
        platform["sessions"] += 1
        platform["viewers"].add(viewer)
        platform["watched"] += watched
        platform["gross"] += session_plan.units * PRICE
        platform["fee"] += session_plan.units * FEE
    expected["platform"] = platform
    expected["creators"] = creators
    expected["owner"] = owner
    return events, expected


def deliveries(events: list[Event], rng: random.Random) -> list[list[Event]]:
    """The events duplicated, shuffled and cut into batches, as a bus may deliver them."""
    delivered = events + [e for e in events if rng.random() < 0.3]
    rng.shuffle(delivered)
    batches, i = [], 0
    while i < len(delivered):
        size = rng.randint(1, 12)
        batches.append(delivered[i : i + size])
        i += size
    return batches


async def stored(analytics: Analytics, expected: dict[str, Any], day: Any) -> dict[str, Any]:
    pool = analytics.app.state.analytics_pool
    videos, viewers = expected["videos"], expected["viewer_ids"]
    daily = {
        r["video_id"]: r
        for r in await pool.fetch("SELECT * FROM video_daily WHERE video_id = ANY($1::uuid[])", videos)
    }
    retention: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0] * 101)
    for r in await pool.fetch("SELECT * FROM video_retention WHERE video_id = ANY($1::uuid[])", videos):
        retention[r["video_id"]][r["pct"]] = r["sessions"]
    stats = {
        r["viewer_id"]: r
        for r in await pool.fetch("SELECT * FROM viewer_stats WHERE viewer_id = ANY($1::uuid[])", viewers)
    }
    creators = {
        r["creator_id"]: r
        for r in await pool.fetch(
            "SELECT * FROM creator_daily WHERE creator_id = ANY($1::uuid[])", expected["creators"]
        )
    }
    platform = await pool.fetchrow("SELECT * FROM platform_daily WHERE day = $1", day)
    return {
        "daily": daily,
        "retention": retention,
        "stats": stats,
        "creators": creators,
        "platform": platform,
    }


def assert_matches(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for video in expected["videos"]:
        want = expected["video_daily"].get(video)
        got = actual["daily"].get(video)
        if want is None or want[0] == 0:
            assert got is None or got["sessions"] == 0
            continue
        assert (got["sessions"], got["views"], got["unique_viewers"]) == (want[0], want[1], len(want[2]))
        assert got["watched_s"] == pytest.approx(want[3])
        assert (got["revenue"], got["gross"]) == (want[4], want[5])
        assert actual["retention"][video] == expected["retention"][video]
    for creator in expected["creators"]:
        mine = [v for v in expected["videos"] if expected["owner"][v] == creator]
        rows = [expected["video_daily"][v] for v in mine if v in expected["video_daily"]]
        got = actual["creators"].get(creator)
        if not rows:
            assert got is None
            continue
        assert got["sessions"] == sum(r[0] for r in rows)
        assert got["views"] == sum(r[1] for r in rows)
        assert got["revenue"] == sum(r[4] for r in rows)
        assert got["watched_s"] == pytest.approx(sum(r[3] for r in rows))
    for viewer, want in expected["viewers"].items():
        got = actual["stats"][viewer]
        assert (got["sessions"], got["spent"], got["videos_finished"]) == (want[0], want[2], len(want[3]))
        assert got["watched_s"] == pytest.approx(want[1])
    platform, want = actual["platform"], expected["platform"]
    assert (platform["sessions"], platform["active_viewers"]) == (want["sessions"], len(want["viewers"]))
    assert (platform["revenue_gross"], platform["platform_fee"], platform["uploads"]) == (
        want["gross"],
        want["fee"],
        want["uploads"],
    )
    assert platform["watched_s"] == pytest.approx(want["watched"])


class TestRollupsMatchAReferenceComputation:
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(plan=plans, seed=st.integers(0, 2**32))
    async def test_duplicated_and_shuffled_delivery_counts_every_fact_once(
        self, analytics: Analytics, plan: list[SessionPlan], seed: int
    ):
        history = History(fresh_day())
        events, expected = build(history, plan)
        await analytics.ingest(*deliveries(events, random.Random(seed)))
        assert_matches(await stored(analytics, expected, history.start.date()), expected)

    async def test_backfill_rebuilds_the_same_rollups_from_the_raw_events(self, analytics: Analytics):
        history = History(fresh_day())
        plan = [
            SessionPlan(video=0, viewer=0, steps=[(10, 0), (20, 40)], ends=True, units=2),
            SessionPlan(video=1, viewer=1, steps=[(3, 0)], ends=False, units=1),
            SessionPlan(video=0, viewer=1, steps=[(6, 0), (6, 15)], ends=True, units=0),
        ]
        events, expected = build(history, plan)
        await analytics.ingest(*deliveries(events, random.Random(7)))
        before = await stored(analytics, expected, history.start.date())
        assert_matches(before, expected)

        replayed = await backfill(analytics.app.state.analytics_pool, analytics.app.state.ingest.rules)

        assert replayed >= len(events)
        assert_matches(await stored(analytics, expected, history.start.date()), expected)

    async def test_a_late_heartbeat_after_the_end_adds_nothing(self, analytics: Analytics, history: History):
        creator, viewer, video, sid = (uuid.uuid4() for _ in range(4))
        ids = (sid, video, viewer, creator)
        late = history.heartbeat(*ids, watched_s=20, position_s=20, duration_s=100, t=21)
        await analytics.ingest(
            [history.started(*ids, duration_s=100, t=0)],
            [history.ended(*ids, watched_s=42, position_s=42, duration_s=100, completed=False, t=43)],
            [late],
            [late],
        )
        row = await analytics.app.state.analytics_pool.fetchrow(
            "SELECT sessions, views, watched_s FROM video_daily WHERE video_id = $1", video
        )
        assert (row["sessions"], row["views"], row["watched_s"]) == (1, 1, 42)
