from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field


class DailyRead(BaseModel):
    day: date
    sessions: int
    views: int
    unique_viewers: int
    watch_minutes: float
    revenue: int
    avg_view_duration_s: float


class TotalsRead(BaseModel):
    sessions: int
    views: int
    unique_viewers: int
    watch_minutes: float
    revenue: int
    avg_view_duration_s: float


class VideoSummaryRead(BaseModel):
    video_id: uuid.UUID
    title: str | None
    sessions: int
    views: int
    watch_minutes: float
    revenue: int


class CreatorOverviewRead(BaseModel):
    creator_id: uuid.UUID
    from_: date = Field(serialization_alias="from")
    to: date
    currency: str
    totals: TotalsRead
    daily: list[DailyRead]
    videos: list[VideoSummaryRead]


class RetentionPoint(BaseModel):
    percent: int
    share: float


class VideoAnalyticsRead(BaseModel):
    video_id: uuid.UUID
    title: str | None
    duration_s: float | None
    from_: date = Field(serialization_alias="from")
    to: date
    currency: str
    totals: TotalsRead
    daily: list[DailyRead]
    retention: list[RetentionPoint]


class ViewerStatsRead(BaseModel):
    viewer_id: uuid.UUID
    sessions: int
    watch_minutes: float
    spent: int
    videos_finished: int
    currency: str


class PlatformDailyRead(BaseModel):
    day: date
    active_viewers: int
    sessions: int
    watch_minutes: float
    revenue_gross: int
    platform_fee: int
    uploads: int
    transcode_failures: int


class PlatformTotalsRead(BaseModel):
    active_viewers: int
    sessions: int
    watch_minutes: float
    revenue_gross: int
    platform_fee: int
    uploads: int
    transcode_failures: int


class PlatformRead(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    currency: str
    totals: PlatformTotalsRead
    daily: list[PlatformDailyRead]
