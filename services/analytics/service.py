"""The rules that turn events into rollups, with no I/O: what a batch of new events adds.

Attribution (documented in docs/architecture.md):

- A session's numbers (session, view, unique viewer, watch time, retention) count on the day (UTC)
  of the first event analytics saw of it: normally ``playback.session_started``; if a heartbeat
  overtakes it, the heartbeat's day.
- Watch time is the session's largest cumulative ``watched_s`` seen; position is the largest
  ``position_s``. Only increases are added to rollups, so duplicated, late and reordered events
  never count twice.
- A session is a *view* once its watch time reaches ``view_threshold_s``; it is *finished* when
  it ended completed or its furthest position reached ``completion_ratio`` of the duration.
- Retention: a session counts at every percent up to the furthest percent of the duration it
  reached (all of them once finished); a session that never played counts at 0 %.
- Revenue (the creator's share, and gross) counts on the charge's day, refunds subtract on theirs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from common.events import Event

# Ids stay the strings the events carry (canonical lowercase UUIDs, which sort like the UUIDs
# themselves): parsing hundreds of thousands of them per second into uuid.UUID showed in profiles.
Id = str
SESSION_TYPES = frozenset({"playback.session_started", "playback.heartbeat", "playback.session_ended"})
HANDLED_TYPES = SESSION_TYPES | {
    "billing.unit_charged",
    "billing.refund_issued",
    "catalog.video_created",
    "catalog.video_ready",
    "catalog.video_failed",
    "catalog.video_deleted",
}


@dataclass(frozen=True)
class Rules:
    view_threshold_s: float = 5.0
    completion_ratio: float = 0.95


@dataclass(frozen=True)
class SessionRow:
    """What has been counted of one session so far."""

    session_id: Id
    video_id: Id
    viewer_id: Id
    creator_id: Id
    day: date
    duration_s: float | None = None
    watched_s: float = 0.0
    max_position_s: float = 0.0
    retention_pct: int = -1
    counted: bool = False
    viewed: bool = False
    completed: bool = False


@dataclass
class Deltas:
    """Everything one batch adds; each key is upserted once per batch."""

    # (video, day) -> [creator, sessions, views, watched_s, revenue, gross]
    video_daily: dict[tuple[Id, date], list[Any]] = field(default_factory=dict)
    # (creator, day) -> [sessions, views, watched_s, revenue, gross]
    creator_daily: dict[tuple[Id, date], list[Any]] = field(default_factory=dict)
    # day -> [sessions, watched_s, revenue_gross, platform_fee, uploads, transcode_failures]
    platform_daily: dict[date, list[Any]] = field(default_factory=dict)
    retention: dict[tuple[Id, int], int] = field(default_factory=lambda: defaultdict(int))
    # viewer -> [sessions, watched_s, spent]
    viewers: dict[Id, list[Any]] = field(default_factory=dict)
    video_viewers: set[tuple[Id, date, Id]] = field(default_factory=set)
    creator_viewers: set[tuple[Id, date, Id]] = field(default_factory=set)
    platform_viewers: set[tuple[date, Id]] = field(default_factory=set)
    finished: set[tuple[Id, Id]] = field(default_factory=set)
    # video -> (creator, title, duration_s, deleted); None keeps what is stored
    videos: dict[Id, list[Any]] = field(default_factory=dict)
    sessions: list[SessionRow] = field(default_factory=list)

    def video_day(self, video: Id, day: date, creator: Id) -> list[Any]:
        row = self.video_daily.get((video, day))
        if row is None:
            row = self.video_daily[(video, day)] = [creator, 0, 0, 0.0, 0, 0]
        return row

    def creator_day(self, creator: Id, day: date) -> list[Any]:
        row = self.creator_daily.get((creator, day))
        if row is None:
            row = self.creator_daily[(creator, day)] = [0, 0, 0.0, 0, 0]
        return row

    def platform_day(self, day: date) -> list[Any]:
        row = self.platform_daily.get(day)
        if row is None:
            row = self.platform_daily[day] = [0, 0.0, 0, 0, 0, 0]
        return row

    def viewer(self, viewer: Id) -> list[Any]:
        row = self.viewers.get(viewer)
        if row is None:
            row = self.viewers[viewer] = [0, 0.0, 0]
        return row

    def video(self, video: Id, creator: Id) -> list[Any]:
        row = self.videos.get(video)
        if row is None:
            row = self.videos[video] = [creator, None, None, None]
        return row


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def first_sightings(events: Iterable[Event]) -> dict[Id, SessionRow]:
    """A fresh row for each session in ``events`` (in time order), from its first event (used when
    the session is new to analytics)."""
    rows: dict[Id, SessionRow] = {}
    for event in events:
        if event.type not in SESSION_TYPES:
            continue
        payload = event.payload
        sid = payload["session_id"]
        if sid not in rows:
            rows[sid] = SessionRow(
                session_id=sid,
                video_id=payload["video_id"],
                viewer_id=payload["viewer_id"],
                creator_id=payload["creator_id"],
                day=event.occurred_at.date(),
            )
    return rows


def aggregate(events: Sequence[Event], stored: dict[Id, SessionRow], rules: Rules) -> Deltas:
    """What ``events`` (new to analytics, in time order) add to the rollups, given the sessions'
    stored rows (every session the events mention, fresh rows included)."""
    deltas = Deltas()
    # session -> [duration_s, watched_s, max_position_s, completed], folded over the batch
    touched: dict[Id, list[Any]] = {}
    for event in events:
        payload = event.payload
        kind = event.type
        if kind in SESSION_TYPES:
            sid = payload["session_id"]
            state = touched.get(sid)
            if state is None:
                row = stored[sid]
                state = touched[sid] = [row.duration_s, row.watched_s, row.max_position_s, row.completed]
            if not state[0]:
                state[0] = _number(payload.get("duration_s")) or None
            state[1] = max(state[1], _number(payload.get("watched_s")))
            state[2] = max(state[2], _number(payload.get("position_s")))
            if kind == "playback.session_ended" and payload.get("completed"):
                state[3] = True
        elif kind in ("billing.unit_charged", "billing.refund_issued"):
            sign = 1 if kind == "billing.unit_charged" else -1
            amount = sign * int(payload["amount"])
            share = sign * int(payload["creator_share"] if sign > 0 else payload["creator_part"])
            fee = sign * int(payload["platform_fee"] if sign > 0 else payload["platform_part"])
            day = event.occurred_at.date()
            video, creator = payload["video_id"], payload["creator_id"]
            video_day = deltas.video_day(video, day, creator)
            video_day[4] += share
            video_day[5] += amount
            creator_day = deltas.creator_day(creator, day)
            creator_day[3] += share
            creator_day[4] += amount
            platform = deltas.platform_day(day)
            platform[2] += amount
            platform[3] += fee
            deltas.viewer(payload["viewer_id"])[2] += amount
        elif kind.startswith("catalog.video_"):
            info = deltas.video(payload["video_id"], payload["creator_id"])
            if kind == "catalog.video_created":
                info[1] = str(payload.get("title") or "")[:200] or None
                deltas.platform_day(event.occurred_at.date())[4] += 1
            elif kind == "catalog.video_ready":
                info[2] = _number(payload.get("duration_s")) or None
            elif kind == "catalog.video_failed":
                deltas.platform_day(event.occurred_at.date())[5] += 1
            elif kind == "catalog.video_deleted":
                info[3] = True
    for sid, (duration, watched, position, completed) in touched.items():
        before = stored[sid]
        after = replace(
            before, duration_s=duration, watched_s=watched, max_position_s=position, completed=completed
        )
        deltas.sessions.append(_count_session(before, after, deltas, rules))
    return deltas


def _count_session(before: SessionRow, after: SessionRow, deltas: Deltas, rules: Rules) -> SessionRow:
    """Add to ``deltas`` what ``after`` has that ``before`` had not counted; the row to store."""
    video_day = deltas.video_day(after.video_id, after.day, after.creator_id)
    creator_day = deltas.creator_day(after.creator_id, after.day)
    platform = deltas.platform_day(after.day)
    viewer = deltas.viewer(after.viewer_id)
    deltas.video(after.video_id, after.creator_id)
    if not before.counted:
        video_day[1] += 1
        creator_day[0] += 1
        platform[0] += 1
        viewer[0] += 1
        deltas.platform_viewers.add((after.day, after.viewer_id))
    watched = after.watched_s - before.watched_s
    if watched > 0:
        video_day[3] += watched
        creator_day[2] += watched
        platform[1] += watched
        viewer[1] += watched
    viewed = before.viewed or after.watched_s >= rules.view_threshold_s
    if viewed and not before.viewed:
        video_day[2] += 1
        creator_day[1] += 1
        deltas.video_viewers.add((after.video_id, after.day, after.viewer_id))
        deltas.creator_viewers.add((after.creator_id, after.day, after.viewer_id))
    duration = after.duration_s
    reached = after.max_position_s / duration if duration else 0.0
    completed = after.completed or (duration is not None and reached >= rules.completion_ratio)
    pct = 100 if completed else min(100, math.floor(reached * 100))
    pct = max(pct, before.retention_pct)
    for percent in range(before.retention_pct + 1, pct + 1):
        deltas.retention[(after.video_id, percent)] += 1
    if completed and not before.completed:
        deltas.finished.add((after.viewer_id, after.video_id))
    return replace(after, counted=True, viewed=viewed, completed=completed, retention_pct=pct)
