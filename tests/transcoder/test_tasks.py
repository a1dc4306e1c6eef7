"""The transcode job end to end: real ffmpeg, the real catalog app over HTTP (uvicorn), real
storage (a local folder, and moto's S3 server), real Redis and arq workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import m3u8
import pytest
from arq import Retry, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from arq.worker import Worker
from pydantic import SecretStr

from common import media
from common.storage import Storage, StorageSettings
from services.catalog.tasks import enqueue_transcode
from streamify.embedded import free_port
from tests.transcoder.conftest import CatalogServer, Clips, needs_ffmpeg
from transcoder.settings import TranscoderSettings
from transcoder.worker import WorkerSettings, ffmpeg_executable, shutdown, startup

pytestmark = needs_ffmpeg


# --- helpers -------------------------------------------------------------------------------------


async def stored_text(storage: Storage, key: str) -> str:
    return (await storage.get(key)).decode()


async def stored_keys(storage: Storage, prefix: str) -> list[str]:
    return [info.key async for info in storage.list(prefix)]


def stream_facts(path: Path) -> list[dict[str, Any]]:
    """ffprobe's view of a file's streams (codec, profile, level, size): what a player sees."""
    probe = media.ffprobe_path()
    assert probe is not None
    out = subprocess.run(
        [probe, "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    streams: list[dict[str, Any]] = json.loads(out)["streams"]
    return streams


def attributes(master_text: str) -> list[dict[str, Any]]:
    """Each variant of a master playlist as its raw STREAM-INF attributes and URI."""
    variants = []
    lines = master_text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            raw = line.split(":", 1)[1]
            playlist = m3u8.loads(f"#EXTM3U\n{line}\n{lines[index + 1]}\n").playlists[0]
            variants.append({"raw": raw, "info": playlist.stream_info, "uri": playlist.uri})
    return variants


async def download(storage: Storage, key: str, folder: Path) -> Path:
    path = folder / key.rsplit("/", 1)[-1]
    path.write_bytes(await storage.get(key))
    return path


async def watch_progress(catalog: CatalogServer, video_id: str, owner: Any, seen: list[int]) -> None:
    while True:
        body = await catalog.video(video_id, owner)
        if body["status"] == "processing" and body["progress"] is not None:
            seen.append(body["progress"])
        await asyncio.sleep(0.03)


async def transcode_and_watch(
    catalog: CatalogServer, video_id: str, owner: Any, settings: TranscoderSettings
) -> tuple[dict[str, Any], list[int]]:
    seen: list[int] = []
    watcher = asyncio.create_task(watch_progress(catalog, video_id, owner, seen))
    try:
        result = await catalog.run_job(video_id, settings)
    finally:
        watcher.cancel()
    return result, seen


# --- ready ---------------------------------------------------------------------------------------


class TestALandscapeClipBecomesReady:
    async def test_the_video_is_ready_with_a_playable_ladder(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, tmp_path: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.landscape)
        settings = catalog.transcoder_settings(work_dir=work_dir)

        result, progress_seen = await transcode_and_watch(catalog, video_id, owner, settings)

        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert video["status"] == "ready" and video["failure_reason"] is None
        assert video["duration_s"] == pytest.approx(7.0, abs=0.5)
        # 640x360 is not upscaled: one rendition.
        assert [(r["name"], r["width"], r["height"]) for r in video["renditions"]] == [("360p", 640, 360)]
        assert video["thumbnail_url"] is not None
        # Progress was visible while processing, from ffmpeg's own progress reports.
        assert any(0 < value < 100 for value in progress_seen), progress_seen
        assert progress_seen == sorted(progress_seen)
        # The temporary folder is gone.
        assert os.listdir(work_dir) == []

        storage = catalog.storage
        master = await stored_text(storage, f"videos/{video_id}/master.m3u8")
        [variant] = attributes(master)
        for name in ("BANDWIDTH=", "AVERAGE-BANDWIDTH=", "RESOLUTION=640x360", "CODECS=", "FRAME-RATE=30"):
            assert name in variant["raw"], (name, variant["raw"])
        info = variant["info"]
        assert info.codecs == "avc1.64001e,mp4a.40.2"
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.bandwidth == video["renditions"][0]["bandwidth"]
        assert variant["uri"] == "360p/index.m3u8"

        playlist = m3u8.loads(await stored_text(storage, f"videos/{video_id}/360p/index.m3u8"))
        assert playlist.is_endlist and playlist.target_duration == 6
        durations = [segment.duration for segment in playlist.segments]
        assert sum(durations) == pytest.approx(7.0, abs=1.0)
        assert durations[0] == pytest.approx(6.0, abs=0.1)  # ~6 s segments
        keys = set(await stored_keys(storage, f"videos/{video_id}/360p/"))
        assert {f"videos/{video_id}/360p/{segment.uri}" for segment in playlist.segments} <= keys

        # What a player decodes matches what the master promises: H.264 High at level 3.0, AAC.
        first = await download(storage, f"videos/{video_id}/360p/{playlist.segments[0].uri}", tmp_path)
        streams = {s["codec_type"]: s for s in stream_facts(first)}
        assert (streams["video"]["profile"], streams["video"]["level"]) == ("High", 30)
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"

        thumbnail = await storage.head(f"thumbnails/{video_id}.jpg")
        assert thumbnail is not None and thumbnail.size > 0 and thumbnail.content_type == "image/jpeg"
        jpeg = await download(storage, f"thumbnails/{video_id}.jpg", tmp_path)
        assert stream_facts(jpeg)[0]["width"] == 640
        head = await storage.head(f"videos/{video_id}/master.m3u8")
        assert head is not None and head.content_type == "application/vnd.apple.mpegurl"
        head = await storage.head(f"videos/{video_id}/360p/{playlist.segments[0].uri}")
        assert head is not None and head.content_type == "video/mp2t"


class TestOrientation:
    async def test_a_portrait_clip_keeps_its_orientation_in_every_rendition(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, tmp_path: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.portrait)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert [(r["name"], r["width"], r["height"]) for r in video["renditions"]] == [
            ("360p", 360, 640),
            ("480p", 480, 854),
        ]
        master = await stored_text(catalog.storage, f"videos/{video_id}/master.m3u8")
        variants = attributes(master)
        assert [v["info"].resolution for v in variants] == [(360, 640), (480, 854)]
        assert [v["info"].codecs for v in variants] == ["avc1.64001e,mp4a.40.2", "avc1.64001f,mp4a.40.2"]
        bandwidths = [v["info"].bandwidth for v in variants]
        assert bandwidths == sorted(bandwidths)
        # Keyframes are aligned: both renditions cut their segments at the same times.
        cuts = []
        for name in ("360p", "480p"):
            playlist = m3u8.loads(await stored_text(catalog.storage, f"videos/{video_id}/{name}/index.m3u8"))
            cuts.append([round(segment.duration, 2) for segment in playlist.segments])
        assert cuts[0] == cuts[1]
        segment = await download(catalog.storage, f"videos/{video_id}/480p/seg_00000.ts", tmp_path)
        video_stream = next(s for s in stream_facts(segment) if s["codec_type"] == "video")
        assert (video_stream["width"], video_stream["height"]) == (480, 854)

    async def test_a_720x1280_portrait_clip_gets_three_portrait_rungs_that_all_play(
        self, local_catalog: CatalogServer, portrait_720p_clip: Path, work_dir: Path, tmp_path: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(portrait_720p_clip)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert [(r["name"], r["width"], r["height"]) for r in video["renditions"]] == [
            ("360p", 360, 640),
            ("480p", 480, 854),
            ("720p", 720, 1280),
        ]
        assert video["duration_s"] == pytest.approx(3.0, abs=0.5)
        variants = attributes(await stored_text(catalog.storage, f"videos/{video_id}/master.m3u8"))
        assert [v["info"].resolution for v in variants] == [(360, 640), (480, 854), (720, 1280)]
        # The top rung decodes as a portrait picture with its sound.
        segment = await download(catalog.storage, f"videos/{video_id}/720p/seg_00000.ts", tmp_path)
        streams = {s["codec_type"]: s for s in stream_facts(segment)}
        assert (streams["video"]["width"], streams["video"]["height"]) == (720, 1280)
        assert streams["audio"]["codec_name"] == "aac"

    async def test_a_rotated_phone_clip_is_laid_out_as_it_is_shown(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.rotated)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert [(r["width"], r["height"]) for r in video["renditions"]] == [(360, 640)]


class TestSmallSource:
    async def test_a_clip_below_360p_gets_one_rendition_at_its_own_size(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.small)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert [(r["name"], r["width"], r["height"]) for r in video["renditions"]] == [("240p", 320, 240)]
        [variant] = attributes(await stored_text(catalog.storage, f"videos/{video_id}/master.m3u8"))
        assert variant["info"].resolution == (320, 240) and variant["uri"] == "240p/index.m3u8"


class TestSilentSource:
    async def test_a_clip_without_audio_gets_no_audio_track(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, tmp_path: Path
    ):
        catalog = local_catalog
        video_id, _ = await catalog.processing_video(clips.silent)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        [variant] = attributes(await stored_text(catalog.storage, f"videos/{video_id}/master.m3u8"))
        assert variant["info"].codecs == "avc1.64001e"
        first = await download(catalog.storage, f"videos/{video_id}/360p/seg_00000.ts", tmp_path)
        probe = await media.probe(first)
        assert probe.has_video and not probe.has_audio


class TestS3Storage:
    async def test_a_clip_stored_in_s3_becomes_ready(
        self, s3_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = s3_catalog
        video_id, owner = await catalog.processing_video(clips.portrait)
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "ready"
        video = await catalog.video(video_id, owner)
        assert video["status"] == "ready" and len(video["renditions"]) == 2
        keys = await stored_keys(catalog.storage, f"videos/{video_id}/")
        assert f"videos/{video_id}/master.m3u8" in keys
        assert any(key.endswith(".ts") and "/480p/" in key for key in keys)
        head = await catalog.storage.head(f"videos/{video_id}/480p/index.m3u8")
        assert head is not None and head.content_type == "application/vnd.apple.mpegurl"
        thumbnail = await catalog.storage.head(f"thumbnails/{video_id}.jpg")
        assert thumbnail is not None and thumbnail.content_type == "image/jpeg"
        assert os.listdir(work_dir) == []


# --- bad input -----------------------------------------------------------------------------------


class TestBadInputFailsWithoutRetry:
    @pytest.mark.parametrize(
        ("clip", "reason"),
        [
            ("not_video", "The file is not a media file we can read."),
            ("empty", "The uploaded file is empty."),
            ("truncated", "The file is not a media file we can read."),
        ],
    )
    async def test_the_video_fails_with_a_readable_reason(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, clip: str, reason: str
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(getattr(clips, clip))
        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))
        assert result == {"status": "failed", "reason": reason}
        video = await catalog.video(video_id, owner)
        assert (video["status"], video["failure_reason"]) == ("failed", reason)
        assert await stored_keys(catalog.storage, f"videos/{video_id}/") == []

    async def test_an_arq_worker_finishes_the_job_on_its_first_try(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, queue_redis_url: str
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.not_video)
        queue = f"streamify:test-transcoder:{uuid.uuid4().hex}"
        redis_settings = RedisSettings.from_dsn(queue_redis_url)
        pool = await create_pool(redis_settings, default_queue_name=queue)
        worker = Worker(
            functions=WorkerSettings.functions,
            redis_settings=redis_settings,
            queue_name=queue,
            on_startup=startup,
            on_shutdown=shutdown,
            ctx={"settings": catalog.transcoder_settings(work_dir=work_dir, queue_name=queue)},
            burst=True,
            handle_signals=False,
            poll_delay=0.05,
        )
        try:
            # Enqueued exactly as the catalog does it (job id = video id).
            job = await enqueue_transcode(pool, uuid.UUID(video_id), queue_name=queue)
            assert job is not None
            await worker.main()
            info = await Job(video_id, pool, _queue_name=queue).result_info()
        finally:
            await worker.close()
            await pool.delete(f"arq:result:{video_id}")
            await pool.aclose()
        assert info is not None and info.success and info.job_try == 1
        assert info.result == {"status": "failed", "reason": "The file is not a media file we can read."}
        assert worker.jobs_retried == 0
        assert (await catalog.video(video_id, owner))["status"] == "failed"


# --- transient errors ----------------------------------------------------------------------------


class TestTransientErrorsAreRetried:
    async def test_an_unreachable_catalog_means_retry_with_backoff(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.landscape)
        settings = catalog.transcoder_settings(
            work_dir=work_dir, catalog_url=f"http://127.0.0.1:{free_port()}", retry_backoff_s=3
        )
        with pytest.raises(Retry) as raised:
            await catalog.run_job(video_id, settings, job_try=2)
        assert raised.value.defer_score == 6000  # 3 s * 2 ** (try - 1)
        assert (await catalog.video(video_id, owner))["status"] == "processing"

    async def test_unreachable_storage_means_retry(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.landscape)
        dead_s3 = StorageSettings(
            storage_backend="s3",
            s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
            s3_bucket="nowhere",
            s3_access_key_id="x",
            s3_secret_access_key=SecretStr("y"),
            s3_path_style=True,
        )
        with pytest.raises(Retry):
            await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir, storage=dead_s3))
        assert (await catalog.video(video_id, owner))["status"] == "processing"

    async def test_the_last_try_reports_failed_instead_of_retrying(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path, monkeypatch: pytest.MonkeyPatch
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.silent)
        # A machine problem: this worker has no ffprobe.
        monkeypatch.setenv("FFPROBE", str(work_dir / "no-such-ffprobe"))
        settings = catalog.transcoder_settings(work_dir=work_dir, max_tries=3)
        with pytest.raises(Retry):
            await catalog.run_job(video_id, settings, job_try=2)
        assert (await catalog.video(video_id, owner))["status"] == "processing"

        result = await catalog.run_job(video_id, settings, job_try=3)
        assert result["status"] == "failed"
        video = await catalog.video(video_id, owner)
        assert video["status"] == "failed" and "temporary problems" in video["failure_reason"]


# --- repeated and interrupted runs ---------------------------------------------------------------


class TestRunningTwice:
    async def test_a_second_run_of_a_ready_video_changes_nothing(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.silent)
        settings = catalog.transcoder_settings(work_dir=work_dir)
        assert (await catalog.run_job(video_id, settings))["status"] == "ready"
        before = await catalog.video(video_id, owner)
        keys = await stored_keys(catalog.storage, f"videos/{video_id}/")

        again = await catalog.run_job(video_id, settings)

        assert again == {"status": "skipped", "video_status": "ready"}
        after = await catalog.video(video_id, owner)
        assert (after["status"], after["renditions"]) == ("ready", before["renditions"])
        assert await stored_keys(catalog.storage, f"videos/{video_id}/") == keys

    async def test_a_run_cancelled_mid_transcode_leaves_nothing_behind_and_the_next_run_finishes(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.landscape)
        settings = catalog.transcoder_settings(work_dir=work_dir)
        # A stale object of an earlier, different run: the next run removes it.
        await catalog.storage.put(f"videos/{video_id}/1080p/index.m3u8", b"#EXTM3U\n")
        first = asyncio.create_task(catalog.run_job(video_id, settings))
        # Cancel as soon as ffmpeg reported progress (what arq does to a job on SIGTERM).
        for _ in range(400):
            if (await catalog.video(video_id, owner))["progress"]:
                break
            await asyncio.sleep(0.02)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert os.listdir(work_dir) == []

        result = await catalog.run_job(video_id, settings)

        assert result["status"] == "ready"
        assert (await catalog.video(video_id, owner))["status"] == "ready"
        keys = await stored_keys(catalog.storage, f"videos/{video_id}/")
        assert f"videos/{video_id}/1080p/index.m3u8" not in keys
        assert f"videos/{video_id}/master.m3u8" in keys


class TestDeletedVideo:
    async def test_the_job_of_a_deleted_video_stops_and_removes_its_outputs(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        catalog = local_catalog
        video_id, owner = await catalog.processing_video(clips.silent)
        response = await catalog.client.delete(f"/videos/{video_id}", headers=owner.headers)
        assert response.status_code == 204, response.text
        # Outputs an earlier run uploaded after the catalog purged the video's objects.
        await catalog.storage.put(f"videos/{video_id}/360p/seg_00000.ts", b"\x47" * 188)
        await catalog.storage.put(f"thumbnails/{video_id}.jpg", b"\xff\xd8\xff")

        result = await catalog.run_job(video_id, catalog.transcoder_settings(work_dir=work_dir))

        assert result == {"status": "gone"}
        assert await stored_keys(catalog.storage, f"videos/{video_id}/") == []
        assert not await catalog.storage.exists(f"thumbnails/{video_id}.jpg")


# --- the worker ----------------------------------------------------------------------------------


class TestProbeFfmpeg:
    async def test_a_worker_reports_which_ffmpeg_it_would_use(self, queue_redis_url: str) -> None:
        queue = f"streamify:test-transcoder:{uuid.uuid4().hex}"
        settings = RedisSettings.from_dsn(queue_redis_url)
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
            await pool.delete(f"arq:result:{job.job_id}")
        finally:
            await worker.close()
            await pool.aclose()
        expected = ffmpeg_executable()
        assert result["executable"] == expected
        if expected is None:
            assert result["version"] is None
        else:
            assert str(result["version"]).startswith("ffmpeg version")


class TestWorkerSettings:
    def test_the_worker_listens_on_the_queue_the_catalog_sends_to(self):
        from services.catalog.settings import CatalogSettings

        assert WorkerSettings.queue_name == CatalogSettings.model_fields["transcode_queue"].default
        assert {getattr(f, "name", getattr(f, "__name__", None)) for f in WorkerSettings.functions} == {
            "transcode_video",
            "probe_ffmpeg",
        }
        assert WorkerSettings.max_jobs == 1

    def test_catalog_url_and_storage_come_from_the_shared_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ):
        monkeypatch.setenv("CATALOG_URL", "http://catalog.internal:9000")
        monkeypatch.setenv("STORAGE_LOCAL_DIR", str(tmp_path))
        monkeypatch.setenv("TRANSCODER_MAX_JOBS", "3")
        settings = TranscoderSettings()
        assert settings.catalog_url == "http://catalog.internal:9000"
        assert settings.storage.storage_local_dir == tmp_path
        assert settings.max_jobs == 3

    def test_the_local_stack_points_its_workers_at_its_catalog_and_store(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ):
        from streamify import stack

        config = stack.StackConfig(data_dir=tmp_path, port=9100, transcoders=2)
        specs = stack.process_specs(
            config,
            database_base_url="postgresql+asyncpg://postgres@127.0.0.1:5999",
            redis_url="redis://127.0.0.1:6999/3",
            secrets={"INTERNAL_SECRET": "generated-secret"},
            environ={"PATH": "/usr/bin"},
        )
        workers = [spec for spec in specs if spec.name.startswith("transcoder-")]
        assert len(workers) == 2 and workers[0].argv[1:] == ["-m", "transcoder.worker"]
        for name, value in workers[0].env.items():
            monkeypatch.setenv(name, value)
        settings = TranscoderSettings()
        assert settings.catalog_url == "http://127.0.0.1:9102"
        assert settings.internal_secret == "generated-secret"
        assert settings.redis_url == "redis://127.0.0.1:6999/3"
        assert settings.storage.storage_local_dir == tmp_path / "storage"
