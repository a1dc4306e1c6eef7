"""Streaming service: playback sessions, heartbeats, HLS delivery (features land in their issue)."""

from __future__ import annotations

from fastapi import FastAPI

from common.app import build_service_app
from services.streaming.settings import StreamingSettings


def create_app(settings: StreamingSettings | None = None) -> FastAPI:
    return build_service_app(name="streaming", settings=settings or StreamingSettings(), routers=[])
