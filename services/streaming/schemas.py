"""What streaming accepts and answers, and what it reads from catalog."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.streaming.models import EndReason, SessionStatus

# Longest position a player may report: a day past any video the catalog accepts.
MAX_POSITION_S = 48 * 3600.0


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(_Input):
    video_id: uuid.UUID


class PlayerState(StrEnum):
    playing = "playing"
    paused = "paused"
    buffering = "buffering"


class HeartbeatCreate(_Input):
    """What the player reports every ``heartbeat_interval_s``: where it is and whether it plays."""

    position_s: Annotated[float, Field(ge=0, le=MAX_POSITION_S, allow_inf_nan=False)]
    state: PlayerState
    # The rendition being played (informational).
    rendition: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = (
        None
    )


class SessionRead(BaseModel):
    """A playback session: where to play it, its price terms and what it has been charged."""

    session_id: uuid.UUID
    video_id: uuid.UUID
    status: SessionStatus
    # The HLS master playlist of this session (carries a short-lived credential); null once ended.
    master_url: str | None
    heartbeat_interval_s: float
    # Length of one billing unit; each unit costs price_per_minute.
    billing_unit_s: float
    price_per_minute: int
    currency: str
    # Units charged so far (the first one when the session started: prepaid).
    billed_minutes: int
    charged_total: int
    # The viewer's balance as billing last reported it; null when billing was never asked (free video).
    balance: int | None
    watched_s: float
    # The last position the player reported.
    position_s: float
    started_at: datetime
    ended_at: datetime | None
    # Why it ended: ended_by_viewer, or expired (no heartbeat for missed_heartbeats_to_end intervals).
    end_reason: EndReason | None


class HeartbeatRead(BaseModel):
    status: SessionStatus
    billed_minutes: int
    charged_total: int
    balance: int | None
    currency: str
    watched_s: float
    # When to send the next heartbeat.
    next_heartbeat_s: float


class HistoryItem(BaseModel):
    video_id: uuid.UUID
    # Where to resume.
    position_s: float
    # The viewer reached ~95% of the video at least once.
    completed: bool
    # Watch time summed over every ended session of this video.
    watched_s: float
    last_watched_at: datetime


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    # Pass as ?cursor= for the next page; null on the last page.
    next_cursor: str | None


class CatalogVideo(BaseModel):
    """The part of catalog's internal video view (``GET /internal/videos/{id}``) streaming uses."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    creator_id: uuid.UUID
    status: str
    visibility: Literal["public", "unlisted", "private"]
    price_per_minute: int = Field(ge=0)
    currency: str = "USD"
    duration_s: float | None = None
