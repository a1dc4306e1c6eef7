"""Streaming tables: the durable record of playback sessions and each viewer's watch history.

While a session lives, its authoritative state is in Redis (``live.py``); this table is written
when the session starts, when a charge or a status change happens, and when it ends, never per
plain heartbeat. Hand-written migrations mirror this file; ``tests/streaming/test_migrations.py``
compares the two.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    text,
)
from sqlmodel import Field, SQLModel

from common.columns import counter_field, one_of, timestamp_field
from common.db import table_registry
from common.outbox import outbox_table


class StreamingTable(SQLModel, registry=table_registry()):
    """Base of every streaming table: its own registry, so its metadata holds only streaming's tables."""


metadata = StreamingTable.metadata


class SessionStatus(StrEnum):
    active = "active"
    payment_required = "payment_required"  # a unit could not be paid; segments answer 402
    ended = "ended"


class EndReason(StrEnum):
    ended_by_viewer = "ended_by_viewer"
    expired = "expired"  # no heartbeat for missed_heartbeats_to_end intervals


CURRENCY_LENGTH = 3


class PlaybackSession(StreamingTable, table=True):
    """One viewer watching one video; price, unit and payer terms are fixed when it starts."""

    __tablename__ = "playback_sessions"
    __table_args__ = (
        CheckConstraint(one_of("status", SessionStatus), name="status"),
        CheckConstraint(f"end_reason IS NULL OR {one_of('end_reason', EndReason)}", name="end_reason"),
        CheckConstraint("(status = 'ended') = (ended_at IS NOT NULL)", name="ended_at_when_ended"),
        CheckConstraint("price_per_minute >= 0", name="price_non_negative"),
        CheckConstraint("unit_ms > 0", name="unit_positive"),
        CheckConstraint("billed_units >= 0 AND watched_ms >= 0 AND position_ms >= 0", name="non_negative"),
        # Free videos and the creator's own are never charged.
        CheckConstraint("paid OR billed_units = 0", name="free_never_billed"),
        CheckConstraint(f"char_length(currency) = {CURRENCY_LENGTH}", name="currency"),
        Index("ix_playback_sessions_viewer_started", "viewer_id", text("started_at DESC")),
        # Sessions not yet ended, for operators and reconciliation.
        Index("ix_playback_sessions_live", "started_at", postgresql_where=text("status <> 'ended'")),
    )

    id: uuid.UUID = Field(primary_key=True)
    viewer_id: uuid.UUID = Field(nullable=False)
    video_id: uuid.UUID = Field(nullable=False)
    creator_id: uuid.UUID = Field(nullable=False)
    status: str = Field(sa_column=Column(String, nullable=False))
    end_reason: str | None = Field(default=None, sa_column=Column(String, nullable=True))
    paid: bool = Field(sa_column=Column(Boolean, nullable=False))
    price_per_minute: int = Field(sa_column=Column(Integer, nullable=False))
    currency: str = Field(sa_column=Column(String, nullable=False))
    unit_ms: int = Field(sa_column=Column(Integer, nullable=False))
    # The video's duration when the session started (completion is judged against it).
    duration_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    billed_units: int = counter_field(Integer)
    watched_ms: int = counter_field(BigInteger)
    # The last position a heartbeat reported: the resume position.
    position_ms: int = counter_field(BigInteger)
    started_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    ended_at: datetime | None = timestamp_field(nullable=True)


class WatchHistory(StreamingTable, table=True):
    """A viewer's history of one video across all sessions: where to resume, and whether finished."""

    __tablename__ = "watch_history"
    __table_args__ = (
        CheckConstraint("position_ms >= 0 AND watched_ms >= 0", name="non_negative"),
        # Keyset pagination of GET /users/me/history: most recently watched first.
        Index(
            "ix_watch_history_viewer_recent", "viewer_id", text("last_watched_at DESC"), text("video_id DESC")
        ),
    )

    viewer_id: uuid.UUID = Field(primary_key=True)
    video_id: uuid.UUID = Field(primary_key=True)
    position_ms: int = counter_field(BigInteger)
    # Watch time summed over every ended session.
    watched_ms: int = counter_field(BigInteger)
    # Once the position reached ~95% of the duration; stays true when the video is watched again.
    completed: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    last_session_id: uuid.UUID | None = Field(default=None, nullable=True)
    first_watched_at: datetime = timestamp_field()
    last_watched_at: datetime = timestamp_field()


# Events written with the changes they report, until the relay has put them on the stream.
event_outbox = outbox_table(metadata)
