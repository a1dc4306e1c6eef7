"""Jobs the catalog hands to the transcoder pool (arq on Redis).

The catalog only enqueues; the job itself (``transcode_video(ctx, video_id, traceparent)``) lives in
``transcoder/``. Enqueue after the commit that moved the video to ``processing``: register
``partial(enqueue_transcode, pool)`` through ``service.mark_uploaded(..., on_committed=...)``.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.jobs import Job
from redis.asyncio import Redis

from common import tracing

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
