"""Jobs the catalog hands to the transcoder pool (arq on Redis).

The catalog only enqueues; the job itself (``transcode_video(ctx, video_id, traceparent)``) lives in
``transcoder/``. Enqueue after the commit that moved the video to ``processing``: register
``partial(enqueue_transcode, pool)`` through ``service.mark_uploaded(..., on_committed=...)``.

Stalls. A transcoder reports progress at least every few seconds while it works, and its result
at the end; a video ``processing`` with no word for ``CATALOG_PROCESSING_STALL_S`` is looked at by
``recover_stalled_videos`` (every ``CATALOG_PROCESSING_SWEEP_INTERVAL_S``, in every replica):

- its job still queued or running (a long queue, a slow start): only noted as seen;
- its job gone (the worker died and arq gave up, Redis lost it) or finished without its result
  reaching the catalog (every report retry failed): enqueued again, and counted;
- after ``CATALOG_PROCESSING_MAX_RESTARTS`` such restarts: ``failed``, with a reason the creator
  can read, instead of ``processing`` for ever.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import Job, JobStatus
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import tracing
from common.commit_hooks import after_commit, transaction
from common.periodic import every
from services.catalog import repository as repo
from services.catalog import service
from services.catalog.models import VideoStatus
from services.catalog.schemas import TranscodeResult

# The transcoder registers its job function under this name, on the queue TRANSCODER_QUEUE_NAME
# (CatalogSettings.transcode_queue must name the same queue).
TRANSCODE_JOB = "transcode_video"
log = structlog.get_logger("catalog")


def arq_pool(redis: Redis, *, queue_name: str) -> ArqRedis:
    """An arq pool over an existing client's connections (no second pool, no connect at start-up)."""
    return ArqRedis(redis.connection_pool, default_queue_name=queue_name)


async def enqueue_transcode(
    pool: ArqRedis, video_id: uuid.UUID, *, queue_name: str | None = None
) -> Job | None:
    """Queue the transcode of ``video_id``; the job id is the video id, so this is safe to repeat.

    Returns the new job, or None when a job for this video is already queued, running, or its
    result is still kept: arq refuses a second job with the same id, so a retried hand-off never
    transcodes twice at once.
    """
    # The job continues the uploading request's trace (common.tracing).
    traceparent = tracing.outgoing_headers().get(tracing.TRACEPARENT)
    trace: dict[str, Any] = {"traceparent": traceparent} if traceparent else {}
    job = await pool.enqueue_job(
        TRANSCODE_JOB, str(video_id), _job_id=str(video_id), _queue_name=queue_name, **trace
    )
    log.info("transcode_enqueued" if job is not None else "transcode_already_queued", video_id=str(video_id))
    return job


STALLED_REASON = " ".join(
    (
        "Transcoding stopped without a word {restarts} times in a row, so it was given up.",
        "Upload the video again.",
    )
)
_ALIVE = (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)


async def recover_stalled_videos(
    sessions: async_sessionmaker[AsyncSession],
    pool: ArqRedis,
    *,
    queue_name: str,
    stall_s: float,
    max_restarts: int,
    limit: int = 100,
) -> dict[str, int]:
    """Look at up to ``limit`` videos processing without news for ``stall_s`` (module docstring):
    how many were still waiting for a transcoder, restarted, or failed."""
    quiet_since = datetime.now(UTC) - timedelta(seconds=stall_s)
    async with sessions() as session:
        stalled = await repo.stalled_videos(session, quiet_since=quiet_since, limit=limit)
    counts = {"waiting": 0, "restarted": 0, "failed": 0}
    for video_id in stalled:
        job_status = await Job(str(video_id), pool, _queue_name=queue_name).status()
        async with transaction(sessions) as session:
            if job_status in _ALIVE:
                if await repo.claim_stalled(session, video_id, quiet_since=quiet_since, restart=False):
                    counts["waiting"] += 1
                continue
            video = await repo.get_video(session, video_id, lock=True)
            if video is None or video.status != VideoStatus.processing.value:
                continue
            if video.transcode_restarts >= max_restarts:
                reason = STALLED_REASON.format(restarts=video.transcode_restarts + 1)
                await service.record_transcode_result(
                    session, video_id, result=TranscodeResult(status="failed", failure_reason=reason)
                )
                counts["failed"] += 1
                log.warning("transcode_given_up", video_id=str(video_id), restarts=video.transcode_restarts)
                continue
            if await repo.claim_stalled(session, video_id, quiet_since=quiet_since, restart=True) is None:
                continue
            if job_status is JobStatus.complete:
                # The job ran, but its result never reached us: drop what arq kept so it can run again.
                await pool.delete(result_key_prefix + str(video_id))
            after_commit(session, partial(enqueue_transcode, pool, video_id, queue_name=queue_name))
            counts["restarted"] += 1
            log.warning("transcode_restarted", video_id=str(video_id), job_status=job_status.value)
    return counts


async def run_stall_sweeps(
    sessions: async_sessionmaker[AsyncSession],
    pool: ArqRedis,
    *,
    queue_name: str,
    interval_s: float,
    stall_s: float,
    max_restarts: int,
) -> None:
    """``recover_stalled_videos`` every ``interval_s`` seconds, until cancelled (the app's lifespan)."""
    sweep = partial(
        recover_stalled_videos,
        sessions,
        pool,
        queue_name=queue_name,
        stall_s=stall_s,
        max_restarts=max_restarts,
    )
    await every(interval_s, sweep, failure="stall_sweep_failed")
