from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class StreamingSettings(ServiceSettings):
    """STREAMING_DATABASE_URL, STREAMING_PORT, ...; shared names (REDIS_URL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="STREAMING_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_streaming"
    port: int = 8083
