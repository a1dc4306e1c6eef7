"""Transcoder fixtures: the real catalog app served by uvicorn on a free port (on the run's
migrated database, real Redis, real storage), generated clips (ffmpeg lavfi), and a driver that
puts a video into ``processing`` the way the upload code does and runs the job as the worker does.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from common.commit_hooks import transaction
from common.internal import SERVICE_TOKEN_HEADER, mint_service_token
from common.storage import Storage, StorageSettings
from services.catalog import service
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from streamify.embedded import free_port
from tests.conftest import migrated_database
from tests.fixtures_s3 import S3Server
from tests.identities import TokenMinter, User
from transcoder.ffmpeg import ffmpeg_executable
from transcoder.settings import TranscoderSettings
from transcoder.tasks import transcode_video
from transcoder.worker import shutdown, startup

FFMPEG = ffmpeg_executable()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


# --- clips ---------------------------------------------------------------------------------------


def make_clip(
    path: Path,
    *,
    size: str = "640x360",
    seconds: float = 7,
    fps: int = 30,
    audio: bool = True,
    rotate: int | None = None,
) -> Path:
    """A test pattern (testsrc2) with an optional 440 Hz tone, H.264/AAC in MP4."""
    assert FFMPEG is not None
    args = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps)]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    encoded = path.with_suffix(".encoded.mp4") if rotate is not None else path
    args += ["-movflags", "+faststart", str(encoded)]
    subprocess.run(args, check=True, timeout=120)
    if rotate is not None:
        # ffmpeg 5.1 writes a display matrix from the rotate tag only when stream-copying.
        remux = [FFMPEG, "-v", "error", "-y", "-i", str(encoded), "-c", "copy"]
        remux += ["-metadata:s:v:0", f"rotate={rotate}", "-movflags", "+faststart", str(path)]
        subprocess.run(remux, check=True, timeout=60)
        encoded.unlink()
    return path


@dataclass(frozen=True)
class Clips:
    landscape: Path  # 640x360, 7 s, with audio
    portrait: Path  # 480x854, 4 s, with audio
    rotated: Path  # 640x360 stored, shown rotated by 90 degrees (a phone held upright), 3 s
    silent: Path  # 640x360, 4 s, no audio
    small: Path  # 320x240, 3 s, with audio: below the lowest rung
    not_video: Path  # a text file named .mp4
    empty: Path  # zero bytes
    truncated: Path  # the first half of an MP4 whose index is at the end


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("clips")
    landscape = make_clip(folder / "landscape.mp4")
    portrait = make_clip(folder / "portrait.mp4", size="480x854", seconds=4)
    rotated = make_clip(folder / "rotated.mp4", seconds=3, rotate=90)
    silent = make_clip(folder / "silent.mp4", seconds=4, audio=False)
    small = make_clip(folder / "small.mp4", size="320x240", seconds=3)
    not_video = folder / "notes.mp4"
    not_video.write_text("These are my holiday notes, not a video.\n" * 50)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    # Without +faststart the index (moov) is at the end: cutting the file in half loses it.
    whole = folder / "whole.mp4"
    assert FFMPEG is not None
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-i", str(landscape), "-c", "copy", str(whole)], check=True, timeout=60
    )
    data = whole.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    return Clips(landscape, portrait, rotated, silent, small, not_video, empty, truncated)


@pytest.fixture(scope="session")
def portrait_720p_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-sized portrait clip, 720x1280, 3 s, with audio (the issue's portrait case)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    return make_clip(tmp_path_factory.mktemp("clips-720p") / "portrait-720p.mp4", size="720x1280", seconds=3)


# --- the catalog, served -------------------------------------------------------------------------


@dataclass
class CatalogServer:
    """The catalog app behind uvicorn on 127.0.0.1:<port>, with its storage."""

    app: FastAPI
    url: str
    storage_settings: StorageSettings
    minter: TokenMinter
    internal_secret: str
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    @property
    def storage(self) -> Storage:
        storage: Storage = self.app.state.storage
        return storage

    def creator(self) -> User:
        user_id = uuid.uuid4()
        return User(id=user_id, role="creator", token=self.minter.token(user_id, "creator"))

    def internal_headers(self) -> dict[str, str]:
        return {SERVICE_TOKEN_HEADER: mint_service_token(self.internal_secret, "transcoder")}

    async def processing_video(self, source: Path | None, owner: User | None = None) -> tuple[str, User]:
        """A video whose file was uploaded (``source`` stored at uploads/{id}/source): processing."""
        owner = owner or self.creator()
        response = await self.client.post("/videos", json={"title": "Test clip"}, headers=owner.headers)
        assert response.status_code == 201, response.text
        video_id = response.json()["id"]
        vid = uuid.UUID(video_id)
        key = f"{service.upload_prefix(vid)}source"
        if source is not None:
            data = await asyncio.to_thread(source.read_bytes)
            await self.storage.put(key, data, content_type="application/octet-stream")

        async def nothing(_: uuid.UUID) -> None:
            return None

        async with transaction(self.app.state.sessions) as session:
            await service.mark_uploaded(session, vid, source_key=key, on_committed=nothing)
        return video_id, owner

    async def video(self, video_id: str, owner: User) -> dict[str, Any]:
        response = await self.client.get(f"/videos/{video_id}", headers=owner.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def transcoder_settings(self, **overrides: Any) -> TranscoderSettings:
        values: dict[str, Any] = {
            "catalog_url": self.url,
            "storage": self.storage_settings,
            "internal_secret": self.internal_secret,
            "progress_interval_s": 0.1,
            "retry_backoff_s": 0.1,
            **overrides,
        }
        return TranscoderSettings(**values)

    async def run_job(self, video_id: str, settings: TranscoderSettings, **ctx: Any) -> dict[str, Any]:
        """``transcode_video`` with the ctx the worker's start-up builds (storage, catalog client)."""
        job_ctx: dict[str, Any] = {"settings": settings, "job_id": video_id, "job_try": 1, **ctx}
        await startup(job_ctx)
        try:
            return await transcode_video(job_ctx, video_id)
        finally:
            await shutdown(job_ctx)


@dataclass
class _Served:
    server: uvicorn.Server
    task: asyncio.Task[None]


async def _serve(app: FastAPI, port: int) -> _Served:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            return _Served(server, task)
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    raise RuntimeError("the catalog did not start within 10 s")


CatalogFactory = Callable[[StorageSettings], Awaitable[CatalogServer]]


@pytest.fixture(scope="session")
async def catalog_servers(
    service_env: dict[str, str], redis_url: str, redis: Any
) -> AsyncIterator[CatalogFactory]:
    """Start a catalog over the given storage (one per storage, for the whole session)."""
    database_url = await migrated_database("catalog")
    minter = TokenMinter()
    running: list[tuple[_Served, CatalogServer]] = []

    async def start(storage: StorageSettings) -> CatalogServer:
        settings = CatalogSettings(
            database_url=database_url, redis_url=redis_url, storage=storage, processing_sweep_interval_s=0
        )
        app = create_app(settings, jwks_loader=minter.loader)
        port = free_port()
        served = await _serve(app, port)
        server = CatalogServer(
            app=app,
            url=f"http://127.0.0.1:{port}",
            storage_settings=storage,
            minter=minter,
            internal_secret=settings.internal_secret,
        )
        running.append((served, server))
        return server

    yield start
    for served, server in running:
        await server.client.aclose()
        served.server.should_exit = True
        await served.task


@pytest.fixture(scope="session")
async def local_catalog(
    catalog_servers: CatalogFactory, tmp_path_factory: pytest.TempPathFactory
) -> CatalogServer:
    storage = StorageSettings(storage_backend="local", storage_local_dir=tmp_path_factory.mktemp("storage"))
    return await catalog_servers(storage)


@pytest.fixture(scope="session")
async def s3_catalog(catalog_servers: CatalogFactory, s3_server: S3Server) -> CatalogServer:
    return await catalog_servers(s3_server.settings())


@pytest.fixture(scope="session")
def queue_redis_url(redis_url: str) -> str:
    """Where these tests' arq queues live: the test Redis server, one database below the shared
    test database. Other test sessions on the same machine flush the shared database when they
    start; a job queued there could vanish under a worker mid-test. Tests delete their own keys."""
    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    db = int(path) if path.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{(db - 1) % 16}"))


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder
