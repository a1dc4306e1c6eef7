from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common import storage as object_storage
from common.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    """CATALOG_DATABASE_URL, CATALOG_PORT, ...; shared names (REDIS_URL, ...) also unprefixed.

    Object storage is configured by the unprefixed STORAGE_BACKEND / STORAGE_LOCAL_DIR / S3_*
    variables every component shares (see common.storage.StorageSettings). It is imported through
    its module so that this module defines exactly one ``*Settings`` class (tools look it up by name).
    """

    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/streamify_catalog"
    port: int = 8082
    # STORAGE_BACKEND, STORAGE_LOCAL_DIR, S3_* (unprefixed, shared with streaming and the transcoder).
    storage: object_storage.StorageSettings = Field(default_factory=object_storage.StorageSettings)
    # Create the bucket (or local folder) at start-up when missing; turn off where the service's
    # credentials may not create buckets.
    storage_create_bucket: bool = True
    # The public prefix the gateway serves catalog under (used in URLs handed to clients).
    public_api_prefix: str = "/api/v1"
    # The transcoder's arq queue (TRANSCODER_QUEUE_NAME on the worker side).
    transcode_queue: str = "streamify:transcoder"
    # Lifetime of a presigned thumbnail URL (S3); clients follow the redirect at once.
    thumbnail_url_ttl_s: int = Field(default=300, ge=1, le=7 * 24 * 3600)

    # --- uploads (tus at /uploads, one-shot PUT /videos/{id}/source) ---
    # Largest file a creator may upload; a bigger Upload-Length is refused (413) before any byte.
    max_upload_bytes: int = Field(default=10 * 1024**3, ge=1, le=100 * 1024**3)
    # Largest one-shot PUT /videos/{id}/source; bigger files go through tus.
    max_source_put_bytes: int = Field(default=256 * 1024**2, ge=1)
    # Size of the multipart parts a tus upload is cut into (>= S3's 5 MiB minimum); one part at a
    # time is held in memory per PATCH in flight.
    upload_part_size: int = Field(default=8 * 1024**2, ge=5 * 1024**2, le=64 * 1024**2)
    # An upload that receives no bytes for this long expires (tus expiration extension).
    upload_expire_s: int = Field(default=24 * 3600, ge=60)
    # How often the catalog looks for expired uploads (0 turns the sweep off, e.g. in tests).
    upload_sweep_interval_s: float = Field(default=300.0, ge=0)
    # A video processing with no word from a transcoder for this long is looked at (tasks.py):
    # re-enqueued if its job is gone, failed after this many restarts. The sweep runs this often
    # (0: off).
    processing_stall_s: float = Field(default=1800.0, gt=0)
    processing_max_restarts: int = Field(default=2, ge=0, le=100)
    processing_sweep_interval_s: float = Field(default=300.0, ge=0)
    # A PATCH whose client sends nothing for this long is ended; what arrived is kept.
    upload_idle_timeout_s: float = Field(default=60.0, gt=0)
    # Time limit for sniffing an uploaded file with ffprobe.
    probe_timeout_s: float = Field(default=60.0, gt=0)
