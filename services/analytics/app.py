"""Analytics service: event consumers and rollups (features land in their issue)."""

from __future__ import annotations

from fastapi import FastAPI

from common.app import build_service_app
from services.analytics.settings import AnalyticsSettings


def create_app(settings: AnalyticsSettings | None = None) -> FastAPI:
    return build_service_app(name="analytics", settings=settings or AnalyticsSettings(), routers=[])
