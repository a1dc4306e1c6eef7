from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    """CATALOG_DATABASE_URL, CATALOG_PORT, ...; shared names (REDIS_URL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_catalog"
    port: int = 8082
