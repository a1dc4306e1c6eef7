from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    """ANALYTICS_DATABASE_URL, ANALYTICS_PORT, ...; shared names (REDIS_URL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_analytics"
    port: int = 8085
