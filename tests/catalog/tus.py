"""Helpers for the upload tests: catalog settings for an upload test app, a small tus driver over
httpx, a real uvicorn server on the test's event loop, and a look at the queued transcode job."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from arq.jobs import Job, JobStatus
from fastapi import FastAPI
from sqlalchemy import text

from common.storage import MIN_PART_SIZE, StorageSettings
from services.catalog.settings import CatalogSettings
from streamify.embedded import free_port
from tests.catalog.conftest import CatalogDriver, User, catalog_settings_for

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def upload_settings(base: CatalogSettings, storage: StorageSettings, **overrides: Any) -> CatalogSettings:
    """Settings for an upload test app: its own transcode queue (no worker of another test run
    takes its jobs), 5 MiB parts (multi-part uploads with small files), no background sweep."""
    values: dict[str, Any] = {
        "transcode_queue": f"test-uploads-{uuid.uuid4().hex[:8]}",
        "upload_part_size": MIN_PART_SIZE,
        "upload_sweep_interval_s": 0,
        **overrides,
    }
    return catalog_settings_for(base.database_url, base.redis_url, storage, **values)


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


@dataclass
class Tus:
    """tus requests as a client sends them (paths relative to the catalog, without /api/v1)."""

    catalog: CatalogDriver

    @property
    def client(self) -> httpx.AsyncClient:
        return self.catalog.client

    def path(self, location: str) -> str:
        return location.removeprefix(self.catalog.settings.public_api_prefix)

    async def create(
        self, user: User, video_id: str, length: int, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            "/uploads",
            headers={
                **TUS,
                **user.headers,
                "Upload-Length": str(length),
                "Upload-Metadata": metadata(video_id=video_id, filename="clip.mp4", filetype="video/mp4"),
                **(headers or {}),
            },
        )

    async def start(self, user: User, video_id: str, length: int) -> str:
        response = await self.create(user, video_id, length)
        assert response.status_code == 201, response.text
        return self.path(response.headers["location"])

    async def patch(
        self, user: User, path: str, offset: int, content: Any, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.patch(
            path,
            content=content,
            headers={
                **TUS,
                **user.headers,
                "Upload-Offset": str(offset),
                "Content-Type": OCTETS,
                **(headers or {}),
            },
        )

    async def head(self, user: User, path: str) -> httpx.Response:
        return await self.client.head(path, headers={**TUS, **user.headers})

    async def offset(self, user: User, path: str) -> int:
        response = await self.head(user, path)
        assert response.status_code == 200, response.text
        return int(response.headers["upload-offset"])

    async def upload(self, user: User, video_id: str, data: bytes, chunk: int) -> str:
        """The whole file in PATCHes of ``chunk`` bytes; returns the upload's path."""
        path = await self.start(user, video_id, len(data))
        offset = 0
        while offset < len(data):
            response = await self.patch(user, path, offset, data[offset : offset + chunk])
            assert response.status_code == 204, response.text
            offset = int(response.headers["upload-offset"])
        return path


async def transcode_job(app: FastAPI, video_id: str) -> tuple[JobStatus, Any]:
    """The status and info of the transcode job queued for ``video_id`` (job id = video id)."""
    settings: CatalogSettings = app.state.settings
    job = Job(video_id, app.state.arq, _queue_name=settings.transcode_queue)
    return await job.status(), await job.info()


async def stored_bytes(catalog: CatalogDriver, key: str) -> bytes:
    return b"".join([chunk async for chunk in catalog.storage.stream(key)])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Leave Ctrl-C to pytest.
        yield


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan already runs over real HTTP on a free port, on this event loop."""
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def recorded_part_sizes(catalog: CatalogDriver, path: str) -> list[int]:
    """The sizes of the multipart parts the upload recorded, in part-number order."""
    parts = await catalog.scalar(
        "SELECT parts FROM uploads WHERE id = :id", id=uuid.UUID(path.rsplit("/", 1)[1])
    )
    return [int(part["size"]) for part in sorted(parts, key=lambda part: part["part_number"])]


async def backdate_upload(catalog: CatalogDriver, path: str) -> None:
    """Move the upload's deadline into the past, as if nobody had written to it for a day."""
    upload_id = uuid.UUID(path.rsplit("/", 1)[1])
    async with catalog.sessions() as session, session.begin():
        await session.execute(
            text("UPDATE uploads SET expires_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": upload_id},
        )
