from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import CommonSettings


class TranscoderSettings(CommonSettings):
    """TRANSCODER_*; shared names (REDIS_URL, LOG_LEVEL, ...) also unprefixed."""

    model_config = SettingsConfigDict(env_prefix="TRANSCODER_", extra="ignore")

    queue_name: str = "streamify:transcoder"
    # A 1080p ladder of a long source takes a while on a small machine; a job past this is cancelled.
    job_timeout_s: int = 3600
    # ffmpeg uses every core for one job, so one job per worker process; scale with processes.
    max_jobs: int = 1
