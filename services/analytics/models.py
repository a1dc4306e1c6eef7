"""Analytics tables: the raw events it has seen and the rollups kept current from them.

``raw_events`` is the history (deduplicated by event id, so a redelivered event is recognised);
everything else is derived from it and can be rebuilt (``streamify analytics backfill``):

- ``watch_sessions``: per session, what has been counted so far (the maxima of its cumulative
  watch time and position, whether it counted as a session, a view, finished), so a late or
  repeated heartbeat adds only what is new;
- ``video_daily``, ``creator_daily``, ``platform_daily``: additive counters per day (UTC);
- ``video_retention``: per video and percent, sessions that reached at least that percent;
- ``viewer_stats``: per viewer totals;
- the ``*_viewers`` and ``viewer_finished`` sets make distinct counts (unique viewers, daily
  active viewers, videos finished) additive: a row is counted when it is first inserted.

Money is integer minor units; watch time is seconds (float), reported as minutes.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Date, DateTime, Float, Index, SmallInteger, String, Text
from sqlmodel import Field, SQLModel

from common.db import table_registry


class AnalyticsTable(SQLModel, registry=table_registry()):
    """Base of every analytics table: its own registry, so its metadata holds only analytics's tables."""


def _count() -> int:
    return Field(default=0, sa_column_kwargs={"server_default": "0", "nullable": False})


def _big() -> int:
    return Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0", "nullable": False})


def _seconds() -> float:
    return Field(default=0.0, sa_type=Float, sa_column_kwargs={"server_default": "0", "nullable": False})


class RawEvent(AnalyticsTable, table=True):
    __tablename__ = "raw_events"
    __table_args__ = (Index("ix_raw_events_occurred_at", "occurred_at"),)

    id: uuid.UUID = Field(primary_key=True)
    type: str = Field(sa_column=Column(String(100), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # The envelope as received (JSON text: cheaper to store than jsonb, and only backfill reads it).
    envelope: str = Field(sa_column=Column(Text, nullable=False))


class VideoInfo(AnalyticsTable, table=True):
    __tablename__ = "known_videos"
    __table_args__ = (Index("ix_known_videos_creator_id", "creator_id"),)

    video_id: uuid.UUID = Field(primary_key=True)
    creator_id: uuid.UUID = Field(nullable=False)
    title: str | None = Field(default=None, sa_type=String(200))
    duration_s: float | None = Field(default=None, sa_type=Float)
    deleted: bool = Field(default=False, sa_column_kwargs={"server_default": "false", "nullable": False})


class PlaybackSession(AnalyticsTable, table=True):
    __tablename__ = "watch_sessions"

    session_id: uuid.UUID = Field(primary_key=True)
    video_id: uuid.UUID = Field(nullable=False)
    viewer_id: uuid.UUID = Field(nullable=False)
    creator_id: uuid.UUID = Field(nullable=False)
    day: date = Field(sa_column=Column(Date, nullable=False))
    duration_s: float | None = Field(default=None, sa_type=Float)
    watched_s: float = _seconds()
    max_position_s: float = _seconds()
    # Highest percent of the duration counted into video_retention; -1 before the session counts.
    retention_pct: int = Field(
        default=-1, sa_type=SmallInteger, sa_column_kwargs={"server_default": "-1", "nullable": False}
    )
    counted: bool = Field(default=False, sa_column_kwargs={"server_default": "false", "nullable": False})
    viewed: bool = Field(default=False, sa_column_kwargs={"server_default": "false", "nullable": False})
    completed: bool = Field(default=False, sa_column_kwargs={"server_default": "false", "nullable": False})


class VideoDaily(AnalyticsTable, table=True):
    __tablename__ = "video_daily"
    __table_args__ = (Index("ix_video_daily_creator_id_day", "creator_id", "day"),)

    video_id: uuid.UUID = Field(primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    creator_id: uuid.UUID = Field(nullable=False)
    sessions: int = _count()
    views: int = _count()
    unique_viewers: int = _count()
    watched_s: float = _seconds()
    revenue: int = _big()
    gross: int = _big()


class CreatorDaily(AnalyticsTable, table=True):
    __tablename__ = "creator_daily"

    creator_id: uuid.UUID = Field(primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    sessions: int = _count()
    views: int = _count()
    unique_viewers: int = _count()
    watched_s: float = _seconds()
    revenue: int = _big()
    gross: int = _big()


class PlatformDaily(AnalyticsTable, table=True):
    __tablename__ = "platform_daily"

    day: date = Field(sa_column=Column(Date, primary_key=True))
    sessions: int = _count()
    active_viewers: int = _count()
    watched_s: float = _seconds()
    revenue_gross: int = _big()
    platform_fee: int = _big()
    uploads: int = _count()
    transcode_failures: int = _count()


class VideoRetention(AnalyticsTable, table=True):
    __tablename__ = "video_retention"

    video_id: uuid.UUID = Field(primary_key=True)
    pct: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    sessions: int = _count()


class ViewerStats(AnalyticsTable, table=True):
    __tablename__ = "viewer_stats"

    viewer_id: uuid.UUID = Field(primary_key=True)
    sessions: int = _count()
    watched_s: float = _seconds()
    spent: int = _big()
    videos_finished: int = _count()


class VideoDayViewer(AnalyticsTable, table=True):
    __tablename__ = "video_day_viewers"

    video_id: uuid.UUID = Field(primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    viewer_id: uuid.UUID = Field(primary_key=True)


class CreatorDayViewer(AnalyticsTable, table=True):
    __tablename__ = "creator_day_viewers"

    creator_id: uuid.UUID = Field(primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    viewer_id: uuid.UUID = Field(primary_key=True)


class PlatformDayViewer(AnalyticsTable, table=True):
    __tablename__ = "platform_day_viewers"

    day: date = Field(sa_column=Column(Date, primary_key=True))
    viewer_id: uuid.UUID = Field(primary_key=True)


class ViewerFinished(AnalyticsTable, table=True):
    __tablename__ = "viewer_finished"

    viewer_id: uuid.UUID = Field(primary_key=True)
    video_id: uuid.UUID = Field(primary_key=True)


metadata = AnalyticsTable.metadata
DERIVED_TABLES = tuple(name for name in metadata.tables if name != "raw_events")
