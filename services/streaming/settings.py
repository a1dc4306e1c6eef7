from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common import storage as object_storage
from common.settings import DEV_INTERNAL_SECRET, ServiceSettings


class StreamingSettings(ServiceSettings):
    """STREAMING_DATABASE_URL, STREAMING_PORT, ...; shared names (REDIS_URL, ...) also unprefixed.

    SPEC §2 names two settings without the service prefix, because the player and tests think in
    them: BILLING_UNIT_SECONDS and HEARTBEAT_INTERVAL_SECONDS (the prefixed names work too).
    """

    model_config = SettingsConfigDict(env_prefix="STREAMING_", extra="ignore", populate_by_name=True)

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_streaming"
    port: int = 8083
    # Peers: video facts from catalog, charges from billing (internal APIs, service credential).
    catalog_url: str = "http://127.0.0.1:8082"
    billing_url: str = "http://127.0.0.1:8084"
    # STORAGE_BACKEND, STORAGE_LOCAL_DIR, S3_* (unprefixed, shared with catalog and the transcoder).
    storage: object_storage.StorageSettings = Field(default_factory=object_storage.StorageSettings)
    # The public prefix the gateway serves streaming under (used in URLs handed to clients).
    public_api_prefix: str = "/api/v1"

    billing_unit_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("BILLING_UNIT_SECONDS", "STREAMING_BILLING_UNIT_SECONDS"),
    )
    heartbeat_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        validation_alias=AliasChoices("HEARTBEAT_INTERVAL_SECONDS", "STREAMING_HEARTBEAT_INTERVAL_SECONDS"),
    )
    # A session with no heartbeat for this many intervals has ended.
    missed_heartbeats_to_end: int = Field(default=3, ge=1, le=100)
    # Live sessions one user may hold at once (another device starting one more gets 409).
    max_sessions_per_user: int = Field(default=3, ge=1, le=100)
    # Billing unreachable: paid sessions keep playing this long while the charge is retried, then
    # stop (fail closed).
    billing_grace_seconds: float = Field(default=30.0, ge=0)
    # Signs the playback credentials embedded in session URLs (HS256). Defaults to the internal
    # secret in development; refused as a placeholder in production like every secret.
    playback_secret: str = DEV_INTERNAL_SECRET
    # Lower bound of a playback credential's lifetime; a credential also outlives twice the
    # video's duration, so a long film does not break mid-way. The live session state is what
    # actually revokes access (ended/payment_required), within a second.
    playback_credential_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Lifetime of a presigned segment URL (S3); players follow the redirect at once.
    segment_url_ttl_s: int = Field(default=120, ge=10, le=3600)

    # Calls to billing (charges): per-attempt deadline and attempts (same charge key each time).
    # A heartbeat that charges waits at most about timeout x attempts, so keep both small.
    billing_timeout_s: float = Field(default=2.0, gt=0, le=30)
    billing_attempts: int = Field(default=3, ge=1, le=10)
    # Connections to billing (kept alive); more charges at once wait for one in aiohttp's pool.
    billing_max_in_flight: int = Field(default=32, ge=1, le=1000)
    catalog_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Charges and status changes of live sessions reach PostgreSQL in batches this often (the live
    # state in Redis and billing's ledger are authoritative meanwhile).
    progress_flush_interval_s: float = Field(default=0.25, gt=0, le=60)
    # How often the sweeper ends sessions whose heartbeats stopped (0 disables it; lazy checks on
    # every read still end them).
    sweep_interval_s: float = Field(default=2.0, ge=0, le=3600)
    # How long an ended session's live state stays in Redis (segment requests then get 410
    # rather than 404, and late heartbeats a cheap answer); the durable record stays in PostgreSQL.
    ended_state_retention_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # A resume position at or past this share of the video's duration marks it completed.
    completion_ratio: float = Field(default=0.95, gt=0, le=1)

    def secret_fields(self) -> tuple[str, ...]:
        return (*super().secret_fields(), "playback_secret")
