"""Real worker processes (``python -m transcoder.worker``): a worker stopped with SIGTERM hands its
job back, a worker killed with SIGKILL has its job run again by another, and the video still
becomes ready."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job

from services.catalog.tasks import enqueue_transcode
from tests.transcoder.conftest import CatalogServer, make_clip, needs_ffmpeg

pytestmark = [needs_ffmpeg, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 2
T = TypeVar("T")


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "transcoder.worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def transcoding_ffmpeg(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                # The ladder's ffmpeg, not the version probe at start-up.
                if "ffmpeg" in child.name() and "-var_stream_map" in child.cmdline():
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def stop(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.stop(signal.SIGKILL)


async def wait_for(
    predicate: Callable[[], Awaitable[T]], *, within_s: float, what: str, worker: WorkerProcess | None = None
) -> T:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(
                f"worker exited ({worker.process.returncode}) before {what}:\n{worker.log()}"
            )
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{worker.log()}" if worker else ""))


class TestWorkerProcesses:
    async def test_a_job_survives_sigterm_and_sigkill_of_its_workers(
        self,
        local_catalog: CatalogServer,
        workers: list[WorkerProcess],
        tmp_path: Path,
        queue_redis_url: str,
    ):
        catalog = local_catalog
        clip = make_clip(tmp_path / "long.mp4", seconds=20)
        video_id, owner = await catalog.processing_video(clip)
        queue = f"streamify:test-transcoder:{uuid.uuid4().hex}"
        work_dir = tmp_path / "work"
        storage_dir = catalog.storage_settings.storage_local_dir
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": queue_redis_url,
            "INTERNAL_SECRET": catalog.internal_secret,
            "CATALOG_URL": catalog.url,
            "STORAGE_BACKEND": "local",
            "STORAGE_LOCAL_DIR": str(storage_dir),
            "TRANSCODER_QUEUE_NAME": queue,
            "TRANSCODER_LEASE_S": str(LEASE_S),
            "TRANSCODER_WORK_DIR": str(work_dir),
            "TRANSCODER_PROGRESS_INTERVAL_S": "0.1",
        }
        pool = await create_pool(RedisSettings.from_dsn(queue_redis_url), default_queue_name=queue)
        try:
            assert await enqueue_transcode(pool, uuid.UUID(video_id), queue_name=queue) is not None

            # 1. SIGTERM mid-job: arq cancels the job (ffmpeg killed) and puts it back in the queue.
            first = WorkerProcess(env, tmp_path / "worker-1.log")
            workers.append(first)
            ffmpeg = await wait_for(
                lambda: asyncio.to_thread(first.transcoding_ffmpeg), within_s=60, what="ffmpeg", worker=first
            )
            first.stop(signal.SIGTERM)
            assert first.process.returncode == 0, first.log()
            _, alive = await asyncio.to_thread(psutil.wait_procs, ffmpeg, 5)
            assert not alive, "the stopped worker left ffmpeg running"

            # 2. SIGKILL mid-job: no goodbye; ffmpeg dies with its worker, the lease lapses.
            second = WorkerProcess(env, tmp_path / "worker-2.log")
            workers.append(second)
            ffmpeg = await wait_for(
                lambda: asyncio.to_thread(second.transcoding_ffmpeg),
                within_s=60,
                what="ffmpeg",
                worker=second,
            )
            killed_at = time.monotonic()
            second.stop(signal.SIGKILL)
            _, alive = await asyncio.to_thread(psutil.wait_procs, ffmpeg, 5)
            assert not [p for p in alive if p.status() != "zombie"], "ffmpeg outlived its killed worker"
            assert os.listdir(work_dir), "the killed worker's folder is left (swept by the next one)"

            # 3. Another worker runs the job again and the video becomes ready.
            third = WorkerProcess(env, tmp_path / "worker-3.log")
            workers.append(third)

            async def ready() -> bool:
                return (await catalog.video(video_id, owner))["status"] == "ready"

            await wait_for(ready, within_s=90, what="the video to become ready", worker=third)
            # The job waited for the lease, not arq's job timeout (hours).
            assert time.monotonic() - killed_at < 60
            info = await Job(video_id, pool, _queue_name=queue).result_info()
            assert info is not None and info.success and info.job_try == 3
            assert info.result["status"] == "ready"
            third.stop(signal.SIGTERM)
            assert os.listdir(work_dir) == []
            assert f'"job_id": "{video_id}"' in third.log()
        finally:
            await pool.delete(f"arq:result:{video_id}", f"arq:job:{video_id}", queue)
            await pool.aclose()
