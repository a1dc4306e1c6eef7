"""A video is never left ``processing`` for ever: when no transcoder has said anything for a long
while, its job is looked for in the queue — still there, it waits; gone or finished without its
result reaching the catalog, it is enqueued again; after too many restarts, the video fails with
a reason its creator can read."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import Job, JobStatus
from fastapi import FastAPI
from sqlalchemy import text

from common.commit_hooks import transaction
from services.catalog import service
from services.catalog.app import create_app
from services.catalog.tasks import enqueue_transcode, recover_stalled_videos
from tests.catalog.conftest import CatalogDriver, catalog_settings_for

HOUR = 3600.0


async def stalled_video(catalog: CatalogDriver, *, restarts: int = 0) -> uuid.UUID:
    """A video processing, last heard of ten years ago (older than anything else in the database)."""
    video = await catalog.create_video(catalog.creator())
    await catalog.upload_done(video["id"])
    async with transaction(catalog.sessions) as session:
        await session.execute(
            text(
                "UPDATE videos SET updated_at = now() - interval '10 years', transcode_restarts = :r"
                " WHERE id = :id"
            ),
            {"r": restarts, "id": uuid.UUID(video["id"])},
        )
    return uuid.UUID(video["id"])


async def state_of(catalog: CatalogDriver, video_id: uuid.UUID) -> dict[str, Any]:
    async with catalog.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT status, transcode_restarts, failure_reason,"
                    " updated_at > now() - interval '1 minute' AS fresh FROM videos WHERE id = :id"
                ),
                {"id": video_id},
            )
        ).one()
    return dict(row._mapping)


async def sweep(catalog: CatalogDriver, arq: ArqRedis, queue: str, max_restarts: int = 2) -> dict[str, int]:
    return await recover_stalled_videos(
        catalog.sessions, arq, queue_name=queue, stall_s=HOUR, max_restarts=max_restarts
    )


class TestTheStallSweep:
    async def test_a_video_whose_job_is_gone_is_enqueued_again_and_counted(
        self, catalog: CatalogDriver, pool: tuple[ArqRedis, str]
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog)

        counts = await sweep(catalog, arq, queue)

        assert counts["restarted"] >= 1
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.queued
        assert await state_of(catalog, video_id) == {
            "status": "processing",
            "transcode_restarts": 1,
            "failure_reason": None,
            "fresh": True,
        }
        await sweep(catalog, arq, queue)  # heard of just now: left alone
        assert (await state_of(catalog, video_id))["transcode_restarts"] == 1
        await arq.delete(f"arq:job:{video_id}")

    async def test_a_video_whose_job_still_waits_in_the_queue_is_only_noted(
        self, catalog: CatalogDriver, pool: tuple[ArqRedis, str]
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog)
        assert await enqueue_transcode(arq, video_id) is not None

        await sweep(catalog, arq, queue)

        state = await state_of(catalog, video_id)
        assert (state["status"], state["transcode_restarts"], state["fresh"]) == ("processing", 0, True)
        assert await arq.zcard(queue) == 1
        await arq.delete(f"arq:job:{video_id}")

    async def test_a_job_that_finished_without_its_result_reaching_the_catalog_runs_again(
        self, catalog: CatalogDriver, pool: tuple[ArqRedis, str]
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog)
        await arq.set(result_key_prefix + str(video_id), b"kept by arq", ex=3600)
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.complete

        await sweep(catalog, arq, queue)

        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.queued
        assert (await state_of(catalog, video_id))["transcode_restarts"] == 1
        await arq.delete(f"arq:job:{video_id}")

    async def test_after_the_last_restart_the_video_fails_with_a_reason_and_no_new_job(
        self, catalog: CatalogDriver, pool: tuple[ArqRedis, str]
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog, restarts=2)

        counts = await sweep(catalog, arq, queue, max_restarts=2)

        assert counts["failed"] >= 1
        state = await state_of(catalog, video_id)
        assert state["status"] == "failed"
        assert "Upload the video again" in state["failure_reason"]
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.not_found

    async def test_progress_reports_keep_a_long_transcode_from_looking_stalled(
        self, catalog: CatalogDriver, pool: tuple[ArqRedis, str]
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog)
        async with transaction(catalog.sessions) as session:
            await service.record_progress(session, video_id, progress=40)

        await sweep(catalog, arq, queue)

        assert (await state_of(catalog, video_id))["transcode_restarts"] == 0
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.not_found


class TestTheRunningService:
    async def test_sweeps_on_its_own(
        self,
        catalog: CatalogDriver,
        asgi_client: Callable[..., Any],
        catalog_settings: Any,
        minter: Any,
        pool: tuple[ArqRedis, str],
    ):
        arq, queue = pool
        video_id = await stalled_video(catalog)
        settings = catalog_settings_for(
            catalog_settings.database_url,
            catalog_settings.redis_url,
            catalog_settings.storage,
            transcode_queue=queue,
            processing_sweep_interval_s=0.05,
            processing_stall_s=365 * 24 * HOUR,  # only the ten-year-old video of this test
        )
        app: FastAPI = create_app(settings, jwks_loader=minter.loader)
        async with asgi_client(app):
            deadline = time.monotonic() + 10
            while (await state_of(catalog, video_id))["transcode_restarts"] != 1:
                assert time.monotonic() < deadline, "the running service did not sweep"
                await asyncio.sleep(0.05)
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.queued
        await arq.delete(f"arq:job:{video_id}")
