"""Every query of the analytics service (asyncpg: ingest is set-based, one statement per table per
batch, with arrays through ``unnest``)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg

from common.events import Event
from services.analytics.models import DERIVED_TABLES
from services.analytics.service import Deltas, Id, SessionRow

SESSION_COLUMNS = (
    "session_id, video_id, viewer_id, creator_id, day, duration_s, watched_s, max_position_s,"
    " retention_pct, counted, viewed, completed"
)


async def create_pool(dsn: str, *, min_size: int = 0, max_size: int = 5) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    return pool


# --- ingest ------------------------------------------------------------------------------------


async def store_raw(connection: asyncpg.Connection, events: Sequence[Event]) -> set[uuid.UUID]:
    """Insert the events analytics has not seen before; the ids of those."""
    rows = await connection.fetch(
        "INSERT INTO raw_events (id, type, occurred_at, envelope)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[])"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        [e.id for e in events],
        [e.type for e in events],
        [e.occurred_at for e in events],
        [e.model_dump_json() for e in events],
    )
    return {row["id"] for row in rows}


async def lock_sessions(connection: asyncpg.Connection, fresh: dict[Id, SessionRow]) -> dict[Id, SessionRow]:
    """The stored rows of these sessions, created from ``fresh`` where missing, locked for the
    transaction (another replica's batch touching the same session waits)."""
    if not fresh:
        return {}
    rows = sorted(fresh.values(), key=lambda r: r.session_id)
    await connection.execute(
        "INSERT INTO watch_sessions (session_id, video_id, viewer_id, creator_id, day)"
        " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::date[])"
        " ON CONFLICT (session_id) DO NOTHING",
        [r.session_id for r in rows],
        [r.video_id for r in rows],
        [r.viewer_id for r in rows],
        [r.creator_id for r in rows],
        [r.day for r in rows],
    )
    stored = await connection.fetch(
        f"SELECT {SESSION_COLUMNS} FROM watch_sessions WHERE session_id = ANY($1::uuid[])"  # noqa: S608
        " ORDER BY session_id FOR UPDATE",
        [r.session_id for r in rows],
    )
    return {str(row["session_id"]): _session(row) for row in stored}


def _session(row: asyncpg.Record) -> SessionRow:
    values = dict(row)
    for key in ("session_id", "video_id", "viewer_id", "creator_id"):
        values[key] = str(values[key])
    return SessionRow(**values)


async def known_durations(connection: asyncpg.Connection, videos: set[Id]) -> dict[Id, float]:
    if not videos:
        return {}
    rows = await connection.fetch(
        "SELECT video_id, duration_s FROM known_videos"
        " WHERE video_id = ANY($1::uuid[]) AND duration_s IS NOT NULL",
        list(videos),
    )
    return {str(row["video_id"]): row["duration_s"] for row in rows}


async def _new_members(connection: asyncpg.Connection, sql: str, members: set[tuple[Any, ...]]) -> list[Any]:
    if not members:
        return []
    ordered = sorted(members)
    columns = [list(column) for column in zip(*ordered, strict=True)]
    return list(await connection.fetch(sql, *columns))


async def apply(connection: asyncpg.Connection, deltas: Deltas) -> None:
    """Write one batch's deltas (inside the caller's transaction), each row once, in key order."""
    video_viewers = Counter(
        (str(row["video_id"]), row["day"])
        for row in await _new_members(
            connection,
            "INSERT INTO video_day_viewers (video_id, day, viewer_id)"
            " SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[]) ON CONFLICT DO NOTHING"
            " RETURNING video_id, day",
            deltas.video_viewers,
        )
    )
    creator_viewers = Counter(
        (str(row["creator_id"]), row["day"])
        for row in await _new_members(
            connection,
            "INSERT INTO creator_day_viewers (creator_id, day, viewer_id)"
            " SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[]) ON CONFLICT DO NOTHING"
            " RETURNING creator_id, day",
            deltas.creator_viewers,
        )
    )
    active_viewers = Counter(
        row["day"]
        for row in await _new_members(
            connection,
            "INSERT INTO platform_day_viewers (day, viewer_id)"
            " SELECT * FROM unnest($1::date[], $2::uuid[]) ON CONFLICT DO NOTHING RETURNING day",
            deltas.platform_viewers,
        )
    )
    finished = Counter(
        str(row["viewer_id"])
        for row in await _new_members(
            connection,
            "INSERT INTO viewer_finished (viewer_id, video_id)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING RETURNING viewer_id",
            deltas.finished,
        )
    )

    if deltas.videos:
        videos = sorted(deltas.videos.items())
        await connection.execute(
            "INSERT INTO known_videos (video_id, creator_id, title, duration_s, deleted)"
            " SELECT v, c, t, d, coalesce(x, false)"
            " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::float8[], $5::bool[]) AS u(v, c, t, d, x)"
            " ON CONFLICT (video_id) DO UPDATE SET"
            " title = coalesce(excluded.title, known_videos.title),"
            " duration_s = coalesce(excluded.duration_s, known_videos.duration_s),"
            " deleted = known_videos.deleted OR excluded.deleted",
            [v for v, _ in videos],
            [row[0] for _, row in videos],
            [row[1] for _, row in videos],
            [row[2] for _, row in videos],
            [row[3] for _, row in videos],
        )

    if deltas.video_daily:
        keys = sorted(deltas.video_daily)
        rows = [deltas.video_daily[k] for k in keys]
        await connection.execute(
            "INSERT INTO video_daily (video_id, day, creator_id, sessions, views, unique_viewers, watched_s,"
            " revenue, gross) SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::int[], $5::int[],"
            " $6::int[], $7::float8[], $8::int8[], $9::int8[])"
            " ON CONFLICT (video_id, day) DO UPDATE SET sessions = video_daily.sessions + excluded.sessions,"
            " views = video_daily.views + excluded.views,"
            " unique_viewers = video_daily.unique_viewers + excluded.unique_viewers,"
            " watched_s = video_daily.watched_s + excluded.watched_s,"
            " revenue = video_daily.revenue + excluded.revenue, gross = video_daily.gross + excluded.gross",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [video_viewers.pop(k, 0) for k in keys],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
        )
    assert not video_viewers, "a new unique viewer always comes with its session's video_daily delta"

    if deltas.creator_daily:
        keys = sorted(deltas.creator_daily)
        rows = [deltas.creator_daily[k] for k in keys]
        await connection.execute(
            "INSERT INTO creator_daily (creator_id, day, sessions, views, unique_viewers, watched_s, revenue,"
            " gross) SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[], $4::int[], $5::int[],"
            " $6::float8[], $7::int8[], $8::int8[])"
            " ON CONFLICT (creator_id, day) DO UPDATE SET"
            " sessions = creator_daily.sessions + excluded.sessions,"
            " views = creator_daily.views + excluded.views,"
            " unique_viewers = creator_daily.unique_viewers + excluded.unique_viewers,"
            " watched_s = creator_daily.watched_s + excluded.watched_s,"
            " revenue = creator_daily.revenue + excluded.revenue,"
            " gross = creator_daily.gross + excluded.gross",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [r[0] for r in rows],
            [r[1] for r in rows],
            [creator_viewers.pop(k, 0) for k in keys],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
        )

    if deltas.platform_daily:
        days = sorted(deltas.platform_daily)
        rows = [deltas.platform_daily[d] for d in days]
        await connection.execute(
            "INSERT INTO platform_daily (day, sessions, active_viewers, watched_s, revenue_gross,"
            " platform_fee, uploads, transcode_failures)"
            " SELECT * FROM unnest($1::date[], $2::int[], $3::int[], $4::float8[],"
            " $5::int8[], $6::int8[], $7::int[], $8::int[])"
            " ON CONFLICT (day) DO UPDATE SET sessions = platform_daily.sessions + excluded.sessions,"
            " active_viewers = platform_daily.active_viewers + excluded.active_viewers,"
            " watched_s = platform_daily.watched_s + excluded.watched_s,"
            " revenue_gross = platform_daily.revenue_gross + excluded.revenue_gross,"
            " platform_fee = platform_daily.platform_fee + excluded.platform_fee,"
            " uploads = platform_daily.uploads + excluded.uploads,"
            " transcode_failures = platform_daily.transcode_failures + excluded.transcode_failures",
            days,
            [r[0] for r in rows],
            [active_viewers.pop(d, 0) for d in days],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
        )

    if deltas.retention:
        percents = sorted(deltas.retention)
        await connection.execute(
            "INSERT INTO video_retention (video_id, pct, sessions)"
            " SELECT * FROM unnest($1::uuid[], $2::int2[], $3::int[])"
            " ON CONFLICT (video_id, pct) DO UPDATE SET"
            " sessions = video_retention.sessions + excluded.sessions",
            [k[0] for k in percents],
            [k[1] for k in percents],
            [deltas.retention[k] for k in percents],
        )

    viewers = sorted(set(deltas.viewers) | set(finished))
    if viewers:
        rows = [deltas.viewers.get(v, [0, 0.0, 0]) for v in viewers]
        await connection.execute(
            "INSERT INTO viewer_stats (viewer_id, sessions, watched_s, spent, videos_finished)"
            " SELECT * FROM unnest($1::uuid[], $2::int[], $3::float8[], $4::int8[], $5::int[])"
            " ON CONFLICT (viewer_id) DO UPDATE SET sessions = viewer_stats.sessions + excluded.sessions,"
            " watched_s = viewer_stats.watched_s + excluded.watched_s,"
            " spent = viewer_stats.spent + excluded.spent,"
            " videos_finished = viewer_stats.videos_finished + excluded.videos_finished",
            viewers,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [finished.get(v, 0) for v in viewers],
        )

    if deltas.sessions:
        rows_ = sorted(deltas.sessions, key=lambda r: r.session_id)
        await connection.execute(
            "UPDATE watch_sessions AS s SET duration_s = u.duration_s, watched_s = u.watched_s,"
            " max_position_s = u.max_position_s, retention_pct = u.retention_pct, counted = u.counted,"
            " viewed = u.viewed, completed = u.completed"
            " FROM unnest($1::uuid[], $2::float8[], $3::float8[], $4::float8[], $5::int2[], $6::bool[],"
            " $7::bool[], $8::bool[]) AS u(session_id, duration_s, watched_s, max_position_s, retention_pct,"
            " counted, viewed, completed) WHERE s.session_id = u.session_id",
            [r.session_id for r in rows_],
            [r.duration_s for r in rows_],
            [r.watched_s for r in rows_],
            [r.max_position_s for r in rows_],
            [r.retention_pct for r in rows_],
            [r.counted for r in rows_],
            [r.viewed for r in rows_],
            [r.completed for r in rows_],
        )


# --- backfill ----------------------------------------------------------------------------------


async def clear_rollups(connection: asyncpg.Connection) -> None:
    await connection.execute(f"TRUNCATE {', '.join(DERIVED_TABLES)}")


async def raw_history(connection: asyncpg.Connection, *, chunk: int = 5000) -> Any:
    """Every stored envelope in the order things happened (an async iterator of JSON texts)."""
    async for row in connection.cursor(
        "SELECT envelope FROM raw_events ORDER BY occurred_at, id", prefetch=chunk
    ):
        yield row["envelope"]


# --- queries -----------------------------------------------------------------------------------


async def video_owner(pool: asyncpg.Pool, video_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT video_id, creator_id, title, duration_s FROM known_videos WHERE video_id = $1", video_id
    )


DAILY_SERIES = """
SELECT d::date AS day, coalesce(r.sessions, 0) AS sessions, coalesce(r.views, 0) AS views,
       coalesce(r.unique_viewers, 0) AS unique_viewers, coalesce(r.watched_s, 0) AS watched_s,
       coalesce(r.revenue, 0) AS revenue, coalesce(r.gross, 0) AS gross
FROM generate_series($2::date, $3::date, interval '1 day') AS d
LEFT JOIN {table} AS r ON r.{key} = $1 AND r.day = d::date
ORDER BY d
"""


CREATOR_SERIES = DAILY_SERIES.format(table="creator_daily", key="creator_id")
VIDEO_SERIES = DAILY_SERIES.format(table="video_daily", key="video_id")


async def creator_series(
    pool: asyncpg.Pool, creator: uuid.UUID, start: date, end: date
) -> list[asyncpg.Record]:
    return list(await pool.fetch(CREATOR_SERIES, creator, start, end))


async def video_series(pool: asyncpg.Pool, video: uuid.UUID, start: date, end: date) -> list[Any]:
    return list(await pool.fetch(VIDEO_SERIES, video, start, end))


async def creator_videos(
    pool: asyncpg.Pool, creator_id: uuid.UUID, start: date, end: date, *, limit: int
) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT r.video_id, v.title, sum(r.sessions) AS sessions, sum(r.views) AS views,"
            " sum(r.watched_s) AS watched_s, sum(r.revenue) AS revenue"
            " FROM video_daily r LEFT JOIN known_videos v ON v.video_id = r.video_id"
            " WHERE r.creator_id = $1 AND r.day BETWEEN $2 AND $3"
            " GROUP BY r.video_id, v.title"
            " ORDER BY sum(r.views) DESC, sum(r.watched_s) DESC, r.video_id LIMIT $4",
            creator_id,
            start,
            end,
            limit,
        )
    )


async def retention(pool: asyncpg.Pool, video_id: uuid.UUID) -> dict[int, int]:
    rows = await pool.fetch("SELECT pct, sessions FROM video_retention WHERE video_id = $1", video_id)
    return {row["pct"]: row["sessions"] for row in rows}


async def viewer_stats(pool: asyncpg.Pool, viewer_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT sessions, watched_s, spent, videos_finished FROM viewer_stats WHERE viewer_id = $1", viewer_id
    )


async def platform_series(pool: asyncpg.Pool, start: date, end: date) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT d::date AS day, coalesce(p.sessions, 0) AS sessions,"
            " coalesce(p.active_viewers, 0) AS active_viewers, coalesce(p.watched_s, 0) AS watched_s,"
            " coalesce(p.revenue_gross, 0) AS revenue_gross, coalesce(p.platform_fee, 0) AS platform_fee,"
            " coalesce(p.uploads, 0) AS uploads, coalesce(p.transcode_failures, 0) AS transcode_failures"
            " FROM generate_series($1::date, $2::date, interval '1 day') AS d"
            " LEFT JOIN platform_daily p ON p.day = d::date ORDER BY d",
            start,
            end,
        )
    )


async def distinct_active_viewers(pool: asyncpg.Pool, start: date, end: date) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(DISTINCT viewer_id) FROM platform_day_viewers WHERE day BETWEEN $1 AND $2",
            start,
            end,
        )
    )
