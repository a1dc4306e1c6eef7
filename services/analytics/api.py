"""Analytics routes (served without the /api/v1 prefix, which the gateway strips). Creators see
only their own videos: another creator's video answers 404, like one analytics never heard of."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from common.errors import Forbidden, NotFound, Unprocessable
from common.identity import AdminIdentity, CurrentIdentity
from services.analytics import repository as repo
from services.analytics.schemas import (
    CreatorOverviewRead,
    DailyRead,
    PlatformDailyRead,
    PlatformRead,
    PlatformTotalsRead,
    RetentionPoint,
    TotalsRead,
    VideoAnalyticsRead,
    VideoSummaryRead,
    ViewerStatsRead,
)
from services.analytics.settings import AnalyticsSettings

DEFAULT_DAYS = 30
MAX_DAYS = 366
TOP_VIDEOS = 50

router = APIRouter(prefix="/analytics", tags=["analytics"])


async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.analytics_pool
    return pool


def get_settings(request: Request) -> AnalyticsSettings:
    settings: AnalyticsSettings = request.app.state.settings
    return settings


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[AnalyticsSettings, Depends(get_settings)]


def date_range(
    from_: Annotated[date | None, Query(alias="from", description="First day (UTC), inclusive.")] = None,
    to: Annotated[date | None, Query(description="Last day (UTC), inclusive; default today.")] = None,
) -> tuple[date, date]:
    end = to or datetime.now(UTC).date()
    start = from_ or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise Unprocessable("'from' must not be after 'to'.", code="invalid_date_range")
    if (end - start).days >= MAX_DAYS:
        raise Unprocessable(f"Ask for at most {MAX_DAYS} days at a time.", code="date_range_too_long")
    return start, end


RangeDep = Annotated[tuple[date, date], Depends(date_range)]


def _minutes(seconds: float) -> float:
    return round(seconds / 60, 3)


def _average(watched_s: float, sessions: int) -> float:
    return round(watched_s / sessions, 3) if sessions else 0.0


def _daily(rows: list[asyncpg.Record]) -> tuple[list[DailyRead], TotalsRead]:
    daily = [
        DailyRead(
            day=row["day"],
            sessions=row["sessions"],
            views=row["views"],
            unique_viewers=row["unique_viewers"],
            watch_minutes=_minutes(row["watched_s"]),
            revenue=row["revenue"],
            avg_view_duration_s=_average(row["watched_s"], row["sessions"]),
        )
        for row in rows
    ]
    sessions = sum(row["sessions"] for row in rows)
    watched = sum(row["watched_s"] for row in rows)
    totals = TotalsRead(
        sessions=sessions,
        views=sum(row["views"] for row in rows),
        # A viewer watching on two days counts on each: unique per day, summed over the range.
        unique_viewers=sum(row["unique_viewers"] for row in rows),
        watch_minutes=_minutes(watched),
        revenue=sum(row["revenue"] for row in rows),
        avg_view_duration_s=_average(watched, sessions),
    )
    return daily, totals


@router.get("/creator/overview", response_model=CreatorOverviewRead)
async def creator_overview(
    identity: CurrentIdentity, pool: PoolDep, settings: SettingsDep, days: RangeDep
) -> CreatorOverviewRead:
    """Your channel's views, watch time and revenue per day, and your videos ranked by views."""
    if identity.role not in ("creator", "admin"):
        raise Forbidden("Create a channel to see creator analytics.", code="not_a_creator")
    creator_id = uuid.UUID(identity.user_id)
    start, end = days
    daily, totals = _daily(await repo.creator_series(pool, creator_id, start, end))
    videos = [
        VideoSummaryRead(
            video_id=row["video_id"],
            title=row["title"],
            sessions=row["sessions"],
            views=row["views"],
            watch_minutes=_minutes(row["watched_s"]),
            revenue=row["revenue"],
        )
        for row in await repo.creator_videos(pool, creator_id, start, end, limit=TOP_VIDEOS)
    ]
    return CreatorOverviewRead(
        creator_id=creator_id,
        from_=start,
        to=end,
        currency=settings.currency,
        totals=totals,
        daily=daily,
        videos=videos,
    )


@router.get("/videos/{video_id}", response_model=VideoAnalyticsRead)
async def video_analytics(
    video_id: uuid.UUID, identity: CurrentIdentity, pool: PoolDep, settings: SettingsDep, days: RangeDep
) -> VideoAnalyticsRead:
    """One of your videos: views, watch time and revenue per day, and its audience retention."""
    video = await repo.video_owner(pool, video_id)
    if video is None or (str(video["creator_id"]) != identity.user_id and not identity.is_admin):
        raise NotFound("No analytics for this video.", code="video_not_found")
    start, end = days
    daily, totals = _daily(await repo.video_series(pool, video_id, start, end))
    reached = await repo.retention(pool, video_id)
    everyone = reached.get(0, 0)
    retention = [
        RetentionPoint(percent=p, share=round(reached.get(p, 0) / everyone, 4) if everyone else 0.0)
        for p in range(101)
    ]
    return VideoAnalyticsRead(
        video_id=video_id,
        title=video["title"],
        duration_s=video["duration_s"],
        from_=start,
        to=end,
        currency=settings.currency,
        totals=totals,
        daily=daily,
        retention=retention,
    )


@router.get("/me", response_model=ViewerStatsRead)
async def my_stats(identity: CurrentIdentity, pool: PoolDep, settings: SettingsDep) -> ViewerStatsRead:
    """What you have watched: sessions, minutes, money spent and videos finished."""
    viewer_id = uuid.UUID(identity.user_id)
    row: Any = await repo.viewer_stats(pool, viewer_id) or {
        "sessions": 0,
        "watched_s": 0.0,
        "spent": 0,
        "videos_finished": 0,
    }
    return ViewerStatsRead(
        viewer_id=viewer_id,
        sessions=row["sessions"],
        watch_minutes=_minutes(row["watched_s"]),
        spent=row["spent"],
        videos_finished=row["videos_finished"],
        currency=settings.currency,
    )


@router.get("/platform", response_model=PlatformRead)
async def platform(_: AdminIdentity, pool: PoolDep, settings: SettingsDep, days: RangeDep) -> PlatformRead:
    """The whole platform per day: active viewers, minutes streamed, revenue, uploads, failures (admins)."""
    start, end = days
    rows = await repo.platform_series(pool, start, end)
    daily = [
        PlatformDailyRead(
            day=row["day"],
            active_viewers=row["active_viewers"],
            sessions=row["sessions"],
            watch_minutes=_minutes(row["watched_s"]),
            revenue_gross=row["revenue_gross"],
            platform_fee=row["platform_fee"],
            uploads=row["uploads"],
            transcode_failures=row["transcode_failures"],
        )
        for row in rows
    ]
    totals = PlatformTotalsRead(
        active_viewers=await repo.distinct_active_viewers(pool, start, end),
        sessions=sum(d.sessions for d in daily),
        watch_minutes=_minutes(sum(row["watched_s"] for row in rows)),
        revenue_gross=sum(d.revenue_gross for d in daily),
        platform_fee=sum(d.platform_fee for d in daily),
        uploads=sum(d.uploads for d in daily),
        transcode_failures=sum(d.transcode_failures for d in daily),
    )
    return PlatformRead(from_=start, to=end, currency=settings.currency, totals=totals, daily=daily)


routers = [router]
