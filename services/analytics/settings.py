from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    """ANALYTICS_DATABASE_URL, ANALYTICS_PORT, ...; shared names (REDIS_URL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_analytics"
    port: int = 8085
    # Off only where something else feeds the handler (tests, the benchmark).
    consume_events: bool = True
    event_stream: str = ""
    consumers: int = Field(default=2, ge=1, le=8)
    consumer_batch_size: int = Field(default=2000, ge=1, le=10_000)
    # After a partial batch a consumer waits this long before reading again: a steady flow of
    # heartbeat summaries is folded in batches of hundreds instead of a few (each batch costs a few
    # round trips), for at most this much more lag.
    consumer_linger_ms: int = Field(default=250, ge=0, le=5_000)
    pool_max: int = Field(default=5, ge=1)
    # A session counts as a view once it has been watched this long.
    view_threshold_seconds: float = Field(default=5.0, ge=0)
    # A session reaching this share of the duration finished the video (streaming uses the same).
    completion_ratio: float = Field(default=0.95, gt=0, le=1)
    # Revenue is reported in the platform's currency (billing's BILLING_CURRENCY).
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
