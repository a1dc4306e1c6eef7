"""Catalog service: videos, uploads, comments, reactions, search (features land in their issue)."""

from __future__ import annotations

from fastapi import FastAPI

from common.app import build_service_app
from services.catalog.settings import CatalogSettings


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    return build_service_app(name="catalog", settings=settings or CatalogSettings(), routers=[])
