from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class BillingSettings(ServiceSettings):
    """BILLING_DATABASE_URL, BILLING_PORT, ...; shared names (REDIS_URL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_billing"
    port: int = 8084
