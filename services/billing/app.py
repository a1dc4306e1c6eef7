"""Billing service: the double-entry ledger, wallets, top-ups, charges (features land in their issue)."""

from __future__ import annotations

from fastapi import FastAPI

from common.app import build_service_app
from services.billing.settings import BillingSettings


def create_app(settings: BillingSettings | None = None) -> FastAPI:
    return build_service_app(name="billing", settings=settings or BillingSettings(), routers=[])
