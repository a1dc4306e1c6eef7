"""Billing service: the double-entry ledger, wallets, top-ups, per-unit charges, refunds, earnings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.app import build_service_app
from common.db import asyncpg_dsn
from common.events import EventBus
from common.outbox import OutboxRelay
from common.tokens import JWKSLoader
from services.billing import repository
from services.billing.api import routers
from services.billing.metrics import BillingObservability
from services.billing.payments import PaymentProvider, provider_from_settings
from services.billing.service import Billing
from services.billing.settings import BillingSettings


def create_app(
    settings: BillingSettings | None = None,
    *,
    jwks_loader: Callable[[FastAPI], JWKSLoader] | None = None,
    payment_provider: PaymentProvider | None = None,
) -> FastAPI:
    """The billing app; ``jwks_loader`` replaces fetching auth's JWKS (tests publish their own keys),
    ``payment_provider`` replaces the configured one."""
    settings = settings or BillingSettings()
    provider = payment_provider or provider_from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        outbox = OutboxRelay(app.state.engine, EventBus(app.state.redis), source="billing")
        ledger = await repository.create_pool(
            asyncpg_dsn(settings.database_url),
            min_size=settings.ledger_pool_min,
            max_size=settings.ledger_pool_max,
        )
        app.state.billing = Billing(ledger=ledger, outbox=outbox, provider=provider, settings=settings)
        outbox.start()
        observability = BillingObservability(app.state.redis, ledger, settings)
        try:
            yield
        finally:
            await observability.aclose()
            await outbox.aclose()
            await ledger.close()

    return build_service_app(
        name="billing",
        settings=settings,
        routers=routers,
        lifespan=lifespan,
        jwks_loader=jwks_loader,
        description=(
            "The double-entry ledger: wallets and top-ups, per-unit charges of playback sessions, "
            "creator earnings, refunds."
        ),
    )
