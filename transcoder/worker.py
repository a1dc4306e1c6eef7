"""The transcoder worker pool: arq on Redis. Run one process per worker: ``python -m transcoder.worker``.

Jobs: ``transcode_video(ctx, video_id)`` (tasks.py), queued by the catalog with the video id as
job id on TRANSCODER_QUEUE_NAME (= CATALOG_TRANSCODE_QUEUE), and ``probe_ffmpeg``.

Hand-back and re-runs, as arq does them and as configured here:

- SIGTERM/SIGINT: arq cancels the running job (the job kills ffmpeg and removes its temporary
  folder), leaves it in the queue and another worker (or this one, restarted) runs it again.
- SIGKILL: the job's in-progress key, renewed by the job as a lease of TRANSCODER_LEASE_S (60 s),
  lapses; the job is still in the queue, so the next worker polling it runs it again. Without the
  lease arq would wait job_timeout + 10 s.
- Each of those runs counts as a try; TRANSCODER_MAX_TRIES (5) bounds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import structlog
from arq import func, run_worker
from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import Function

from common.internal import ServiceClient
from common.logging import configure_logging
from common.storage import storage_from_settings
from transcoder import metrics
from transcoder.catalog import CatalogClient
from transcoder.ffmpeg import ffmpeg_executable
from transcoder.settings import TranscoderSettings
from transcoder.tasks import sweep_work_dirs, transcode_video

__all__ = ["WorkerSettings", "ffmpeg_executable", "main", "probe_ffmpeg", "shutdown", "startup"]

log = structlog.get_logger("transcoder")
settings = TranscoderSettings()


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
    """Open the object store and the catalog client for every job of this worker (``ctx``)."""
    job_settings: TranscoderSettings = ctx.setdefault("settings", settings)
    resources = contextlib.AsyncExitStack()
    ctx["resources"] = resources
    ctx["storage"] = await resources.enter_async_context(storage_from_settings(job_settings.storage))
    catalog = CatalogClient(
        ServiceClient(
            job_settings.catalog_url,
            service="transcoder",
            secret=job_settings.internal_secret,
            timeout_s=job_settings.catalog_timeout_s,
        )
    )
    resources.push_async_callback(catalog.aclose)
    ctx["catalog"] = catalog
    swept = await asyncio.to_thread(sweep_work_dirs, job_settings)
    if ctx.get("redis") is not None:
        refresher = asyncio.create_task(metrics.refresh_forever(ctx["redis"], job_settings.queue_name))
        resources.callback(refresher.cancel)
    ffmpeg = await probe_ffmpeg(ctx)
    log.info(
        "transcoder_started",
        queue=job_settings.queue_name,
        max_jobs=job_settings.max_jobs,
        catalog_url=job_settings.catalog_url,
        storage=job_settings.storage.storage_backend,
        stale_work_dirs_removed=swept,
        **ffmpeg,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    resources: contextlib.AsyncExitStack | None = ctx.pop("resources", None)
    if resources is not None:
        await resources.aclose()
    log.info("transcoder_stopped")


async def bind_job_id(ctx: dict[str, Any]) -> None:
    """arq runs each job in its own task: the id bound here is on every log line of that job,
    arq's own start/finish lines included."""
    structlog.contextvars.bind_contextvars(job_id=ctx["job_id"])


class WorkerSettings:
    """arq reads these class attributes; ``arq transcoder.worker.WorkerSettings`` works too."""

    functions: list[Function | WorkerCoroutine] = [
        func(transcode_video, max_tries=settings.max_tries),
        probe_ffmpeg,
    ]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue_name = settings.queue_name
    job_timeout = settings.job_timeout_s
    max_jobs = settings.max_jobs
    max_tries = settings.max_tries
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = bind_job_id
    ctx = {"settings": settings}
    # Finished-job results are kept briefly for callers that wait on them. While one is kept, arq
    # refuses a new job with the same id (the catalog's re-enqueue of the same video is a no-op).
    keep_result = 3600


def main() -> None:
    configure_logging("transcoder", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    # One line per progress report would drown the job's own events.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
