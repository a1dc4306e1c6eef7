from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common import storage as object_storage
from common.settings import CommonSettings

# libx264 presets the ladder may use. "ultrafast" is left out on purpose: it silently drops to
# Constrained Baseline, and the master playlist's CODECS (High profile) would then lie.
X264Preset = Literal["superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]


class TranscoderSettings(CommonSettings):
    """TRANSCODER_*; shared names (REDIS_URL, INTERNAL_SECRET, LOG_LEVEL, ...) also unprefixed.

    Object storage comes from the unprefixed STORAGE_BACKEND / STORAGE_LOCAL_DIR / S3_* variables
    every component shares; the catalog's address from CATALOG_URL (or TRANSCODER_CATALOG_URL).
    """

    model_config = SettingsConfigDict(env_prefix="TRANSCODER_", extra="ignore")

    # Must equal the catalog's CATALOG_TRANSCODE_QUEUE.
    queue_name: str = "streamify:transcoder"
    # ffmpeg uses every core for one job, so one job per worker process; scale with processes.
    max_jobs: int = Field(default=1, ge=1)
    # arq's hard cap on one try of a job. The ffmpeg run itself has a tighter limit proportional to
    # the source's duration (ffmpeg_timeout_base_s + ffmpeg_timeout_per_second * duration).
    job_timeout_s: int = Field(default=6 * 3600, ge=60)
    ffmpeg_timeout_base_s: float = Field(default=300.0, gt=0)
    ffmpeg_timeout_per_second: float = Field(default=4.0, gt=0)
    # Tries per video, counting re-runs after a crash or SIGTERM; transient errors back off
    # retry_backoff_s * 2**(try-1), at most retry_backoff_max_s.
    max_tries: int = Field(default=5, ge=1)
    retry_backoff_s: float = Field(default=5.0, ge=0)
    retry_backoff_max_s: float = Field(default=300.0, ge=0)
    # A running job keeps arq's in-progress key alive for this long and renews it every third of
    # it; when a worker is SIGKILLed the key lapses and another worker takes the job within about
    # lease_s (instead of job_timeout_s + 10 s, arq's own in-progress lifetime). 0 disables renewal.
    lease_s: float = Field(default=60.0, ge=0)
    catalog_url: str = Field(
        default="http://127.0.0.1:8082",
        validation_alias=AliasChoices("TRANSCODER_CATALOG_URL", "CATALOG_URL"),
    )
    catalog_timeout_s: float = Field(default=10.0, gt=0)
    # STORAGE_BACKEND, STORAGE_LOCAL_DIR, S3_* (unprefixed, shared with catalog and streaming).
    storage: object_storage.StorageSettings = Field(default_factory=object_storage.StorageSettings)
    # Lifetime of the presigned URL ffmpeg reads an S3 source through.
    source_url_ttl_s: int = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)
    # Where jobs write before uploading; every job gets its own folder, removed when it ends
    # (folders of dead worker processes are swept at start-up). Default: <system temp>/streamify-transcoder.
    work_dir: Path | None = None
    x264_preset: X264Preset = "veryfast"
    segment_seconds: int = Field(default=6, ge=2, le=20)
    # Keyframes every this many seconds, in every rendition at the same instants.
    keyframe_seconds: int = Field(default=2, ge=1, le=10)
    audio_bitrate: int = Field(default=128_000, ge=32_000, le=512_000)
    thumbnail_width: int = Field(default=640, ge=16, le=3840)
    upload_concurrency: int = Field(default=8, ge=1, le=64)
    # Progress reports to the catalog at most this often (and only when the percentage changed).
    progress_interval_s: float = Field(default=1.0, ge=0)
    # Where the worker serves /metrics for Prometheus (transcoder/metrics.py); port 0 turns it off.
    # `streamify up` gives worker N the port P+9+N (P: the gateway's port, so 8090, 8091, ...).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=8090, ge=0, le=65535)

    @model_validator(mode="after")
    def _segments_hold_whole_gops(self) -> Self:
        # A segment can only end on a keyframe: whole GOPs per segment keep every segment ~equal.
        if self.segment_seconds % self.keyframe_seconds:
            raise ValueError("segment_seconds must be a multiple of keyframe_seconds")
        return self
