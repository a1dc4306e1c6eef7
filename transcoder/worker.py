"""The transcoder worker pool: arq on Redis. Run one process per worker: ``python -m transcoder.worker``.

Only the ffmpeg probe lives here now; the transcode job arrives with the video pipeline.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import structlog
from arq import run_worker
from arq.connections import RedisSettings

from common.logging import configure_logging
from transcoder.settings import TranscoderSettings

log = structlog.get_logger("transcoder")
settings = TranscoderSettings()


def ffmpeg_executable() -> str | None:
    """ffmpeg from PATH, else the one bundled in the imageio-ffmpeg wheel when installed."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:
        return None


async def probe_ffmpeg(ctx: dict[str, Any]) -> dict[str, str | None]:
    """Which ffmpeg this worker would transcode with, and its version line (None when there is none)."""
    executable = ffmpeg_executable()
    if executable is None:
        return {"executable": None, "version": None}
    process = await asyncio.create_subprocess_exec(
        executable,
        "-hide_banner",
        "-version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stdout, _ = await process.communicate()
    first_line = stdout.decode(errors="replace").splitlines()[0] if stdout else ""
    return {"executable": executable, "version": first_line or None}


async def startup(ctx: dict[str, Any]) -> None:
    ffmpeg = await probe_ffmpeg(ctx)
    log.info("transcoder_started", queue=settings.queue_name, max_jobs=settings.max_jobs, **ffmpeg)


async def shutdown(ctx: dict[str, Any]) -> None:
    log.info("transcoder_stopped")


class WorkerSettings:
    """arq reads these class attributes; ``arq transcoder.worker.WorkerSettings`` works too."""

    functions = [probe_ffmpeg]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue_name = settings.queue_name
    job_timeout = settings.job_timeout_s
    max_jobs = settings.max_jobs
    on_startup = startup
    on_shutdown = shutdown
    # Finished-job results are kept briefly for callers that wait on them.
    keep_result = 3600


def main() -> None:
    configure_logging("transcoder", settings.log_level)
    run_worker(WorkerSettings)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
