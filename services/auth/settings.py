"""Auth service settings: AUTH_DATABASE_URL, AUTH_PORT, token lifetimes, cookie, limits, hashing cost."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    """AUTH_* variables; shared names (ENVIRONMENT, REDIS_URL, JWT_ISSUER, ...) are also read unprefixed."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_auth"
    port: int = 8081

    access_token_ttl_s: int = Field(1800, ge=60, le=86_400)
    refresh_token_ttl_s: int = Field(7 * 86_400, ge=300)
    # Refresh tokens expired for a day are deleted this often (and sign-ins left without tokens);
    # 0 turns the purge off.
    refresh_purge_interval_s: float = Field(3600.0, ge=0)
    # A retired signing key stays published this long after the last token it signed has expired
    # (covers clock skew and instances that have not reloaded their keys yet).
    key_retirement_margin_s: int = Field(300, ge=0)
    # Instances re-read the key table at least this often even without a rotation signal in Redis.
    signing_keys_reload_s: float = Field(60.0, gt=0)
    # Encrypts the private signing keys at rest in the auth database; required in production.
    signing_key_passphrase: str = ""

    refresh_cookie_name: str = "streamify_refresh"
    # The gateway serves the auth routes under /api/v1, so that is where browsers must send the cookie.
    refresh_cookie_path: str = "/api/v1/auth"
    # None: Secure everywhere except ENVIRONMENT=development (plain-http localhost).
    cookie_secure: bool | None = None

    login_rate_per_account: str = "5/minute"
    login_rate_per_ip: str = "20/minute"
    # The gateway replaces X-Forwarded-For with the peer address; trust it only behind the gateway.
    trust_forwarded_for: bool = True

    password_min_length: int = Field(10, ge=8)
    password_max_length: int = Field(128, le=1024)
    password_min_score: int = Field(2, ge=0, le=4)
    # argon2id cost (RFC 9106 "low memory" profile by default); tests lower it to stay fast.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost_kib: int = Field(65_536, ge=1024)
    argon2_parallelism: int = Field(4, ge=1)
    # At most this many hashes run at once: each one holds argon2_memory_cost_kib of RAM.
    hash_concurrency: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _default_cookie_secure(self) -> AuthSettings:
        if self.cookie_secure is None:
            self.cookie_secure = self.environment != "development"
        return self

    @property
    def refresh_cookie_secure(self) -> bool:
        return bool(self.cookie_secure)

    @property
    def signing_key_retire_after_s(self) -> int:
        """How long a retired key stays in the JWKS: every token it signed has expired by then."""
        return self.access_token_ttl_s + self.key_retirement_margin_s + int(self.signing_keys_reload_s)

    def secret_fields(self) -> tuple[str, ...]:
        return (*super().secret_fields(), "signing_key_passphrase")
