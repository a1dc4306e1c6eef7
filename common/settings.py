"""Settings base shared by every component: environment, URLs, secrets and their guards."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Environment = Literal["development", "test", "production"]

# Values that only make sense on a laptop; refused when ENVIRONMENT=production.
DEV_INTERNAL_SECRET = "dev-only-internal-secret-never-use-in-production"  # noqa: S105 - a guarded development default
MIN_SECRET_LENGTH = 32
PLACEHOLDER_SECRETS = frozenset({"", DEV_INTERNAL_SECRET, "changeme", "change-me", "secret"})


SHARED_FIELDS = frozenset(
    {
        "environment",
        "log_level",
        "redis_url",
        "internal_secret",
        "jwt_issuer",
        "jwt_audience",
        "jwks_url",
        "jwks_cache_seconds",
        "upstream_timeout_s",
    }
)


class _SharedEnvSource(EnvSettingsSource):
    """Reads the mesh-wide names (REDIS_URL, INTERNAL_SECRET, ...) without the service prefix."""

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in super().__call__().items() if key in SHARED_FIELDS}


class CommonSettings(BaseSettings):
    """Settings every service and the gateway share; each subclass adds its own env prefix.

    Shared names (ENVIRONMENT, REDIS_URL, INTERNAL_SECRET, JWT_*) are read without a prefix
    so one environment configures the whole mesh; per-service names carry the prefix.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Environment = "development"
    log_level: str = "INFO"
    redis_url: str = "redis://127.0.0.1:6379/0"
    internal_secret: str = DEV_INTERNAL_SECRET
    jwt_issuer: str = "streamify-auth"
    jwt_audience: str = "streamify"
    # Where the public keys are published; the gateway and services cache them.
    jwks_url: str = "http://127.0.0.1:8081/.well-known/jwks.json"
    jwks_cache_seconds: int = 300
    upstream_timeout_s: float = 10.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Prefixed names win over the shared unprefixed ones.
        shared = _SharedEnvSource(settings_cls, env_prefix="")
        return init_settings, env_settings, shared, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        if self.environment == "production":
            for name in self.secret_fields():
                value = getattr(self, name)
                if value is None or str(value).strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"{name} must be set to a real secret when ENVIRONMENT=production")
                if len(str(value)) < MIN_SECRET_LENGTH:
                    raise ValueError(f"{name} must be at least {MIN_SECRET_LENGTH} characters in production")
        return self

    def secret_fields(self) -> tuple[str, ...]:
        """Names of fields that must hold a real secret in production."""
        return ("internal_secret",)


class ServiceSettings(CommonSettings):
    """A service with its own PostgreSQL database."""

    database_url: str = ""
    db_pool_size: int = 10
    db_max_overflow: int = 10
    host: str = "127.0.0.1"
    port: int = 8081

    @model_validator(mode="after")
    def _require_database(self) -> ServiceSettings:
        if not self.database_url:
            raise ValueError("DATABASE_URL is required (with the service's prefix)")
        return self
