from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class BillingSettings(ServiceSettings):
    """BILLING_DATABASE_URL, BILLING_PORT, BILLING_PLATFORM_FEE_BPS, ...; shared names (REDIS_URL, ...)
    also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_billing"
    port: int = 8084
    # The one currency the platform trades in (ISO 4217); amounts are integer minor units (cents).
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    # The platform's part of each charge in basis points: fee = floor(amount * bps / 10000), the
    # creator gets the rest (rounding in the creator's favour). Recorded on every charge, so a
    # change applies to new charges only.
    platform_fee_bps: int = Field(default=2000, ge=0, le=10_000)
    # Bounds of one top-up, in cents (USD 1.00 .. USD 1,000.00 by default).
    topup_min: int = Field(default=100, ge=1)
    topup_max: int = Field(default=100_000, ge=1, le=100_000_000)
    # "sandbox" (the built-in provider: payment_method "test_card" succeeds, "test_card_declined"
    # declines), or "package.module:factory" for another one: factory(settings) -> PaymentProvider.
    payment_provider: str = "sandbox"
    # The sandbox hands out money for nothing: refused when ENVIRONMENT=production unless this says
    # the deployment is a demo.
    sandbox_in_production: bool = False
    # Seconds a payment provider may take before a top-up answers 503 (nothing is written).
    payment_timeout_s: float = Field(default=15.0, gt=0, le=120)
    # The ledger's own connection pool (asyncpg, autocommit: every ledger write is one statement);
    # connections open on first use, so the process starts (and /healthz answers) without the database.
    ledger_pool_min: int = Field(default=0, ge=0, le=100)
    ledger_pool_max: int = Field(default=16, ge=1, le=100)
    # How often one replica checks every ledger invariant for the ledger alerts (services/billing/
    # metrics.py); 0 turns the check off.
    ledger_check_interval_s: float = Field(default=900.0, ge=0)

    @model_validator(mode="after")
    def _check_billing(self) -> BillingSettings:
        if self.topup_min > self.topup_max:
            raise ValueError("BILLING_TOPUP_MIN must not exceed BILLING_TOPUP_MAX")
        if self.ledger_pool_min > self.ledger_pool_max:
            raise ValueError("BILLING_LEDGER_POOL_MIN must not exceed BILLING_LEDGER_POOL_MAX")
        if (
            self.environment == "production"
            and self.payment_provider == "sandbox"
            and not self.sandbox_in_production
        ):
            raise ValueError(
                "BILLING_PAYMENT_PROVIDER=sandbox gives money away; configure a real provider in "
                "production (or set BILLING_SANDBOX_IN_PRODUCTION=true for a demo)"
            )
        return self
