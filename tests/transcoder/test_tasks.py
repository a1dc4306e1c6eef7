"""The transcoder worker takes jobs from its Redis queue (a real arq worker on the test Redis)."""

from __future__ import annotations

import uuid

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

from transcoder.worker import WorkerSettings, ffmpeg_executable


class TestProbeFfmpeg:
    async def test_a_worker_reports_which_ffmpeg_it_would_use(self, redis_url: str) -> None:
        queue = f"streamify:test-transcoder:{uuid.uuid4().hex}"
        settings = RedisSettings.from_dsn(redis_url)
        pool = await create_pool(settings, default_queue_name=queue)
        worker = Worker(
            functions=WorkerSettings.functions,
            redis_settings=settings,
            queue_name=queue,
            burst=True,
            handle_signals=False,
            poll_delay=0.05,
        )
        try:
            job = await pool.enqueue_job("probe_ffmpeg")
            assert job is not None
            await worker.main()
            result = await job.result(timeout=10)
        finally:
            await worker.close()
            await pool.aclose()
        expected = ffmpeg_executable()
        assert result["executable"] == expected
        if expected is None:
            assert result["version"] is None
        else:
            assert str(result["version"]).startswith("ffmpeg version")
