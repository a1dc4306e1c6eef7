"""The transcode job is enqueued into Redis with the video id as its job id, once."""

from __future__ import annotations

import uuid
from functools import partial

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from common.commit_hooks import transaction
from services.catalog import service
from services.catalog.tasks import TRANSCODE_JOB, enqueue_transcode
from tests.catalog.conftest import CatalogDriver


class TestEnqueueTranscode:
    async def test_the_job_is_queued_under_the_video_id(self, pool):
        arq, queue = pool
        video_id = uuid.uuid4()
        job = await enqueue_transcode(arq, video_id)
        assert job is not None
        assert job.job_id == str(video_id)
        assert await Job(str(video_id), arq, _queue_name=queue).status() is JobStatus.queued
        info = await job.info()
        assert info is not None
        assert (info.function, info.args) == (TRANSCODE_JOB, (str(video_id),))
        await arq.delete(f"arq:job:{video_id}")

    async def test_a_second_enqueue_of_the_same_video_is_refused(self, pool):
        arq, queue = pool
        video_id = uuid.uuid4()
        assert await enqueue_transcode(arq, video_id) is not None
        assert await enqueue_transcode(arq, video_id) is None
        assert await arq.zcard(queue) == 1
        await arq.delete(f"arq:job:{video_id}")

    async def test_the_upload_hand_off_enqueues_only_after_its_commit(self, pool, catalog: CatalogDriver):
        arq, queue = pool
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        async with transaction(catalog.sessions) as session:
            await service.mark_uploaded(
                session, vid, source_key=f"uploads/{vid}/source", on_committed=partial(enqueue_transcode, arq)
            )
            assert await Job(str(vid), arq, _queue_name=queue).status() is JobStatus.not_found
        assert await Job(str(vid), arq, _queue_name=queue).status() is JobStatus.queued
        await arq.delete(f"arq:job:{vid}")

    async def test_the_app_provides_a_pool_on_the_configured_queue(self, catalog: CatalogDriver):
        app_pool: ArqRedis = catalog.app.state.arq
        assert app_pool.default_queue_name == catalog.settings.transcode_queue
        assert await app_pool.ping()
