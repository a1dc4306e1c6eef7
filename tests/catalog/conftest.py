"""Catalog test fixtures: the catalog app on the run's migrated database with real Redis and a
local storage directory, RS256 access tokens minted with a key the app trusts (published through
``create_app(jwks_loader=...)``, no auth server needed), and a driver for common steps."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.commit_hooks import transaction
from common.internal import SERVICE_TOKEN_HEADER, mint_service_token
from common.storage import Storage, StorageSettings
from services.catalog import service
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from tests.conftest import migrated_database
from tests.identities import TokenMinter, User
from tests.media import make_video


def unique_word(prefix: str = "zq") -> str:
    """A word no other test's video contains (letters only, so the stemmer keeps it whole)."""
    return prefix + "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:10])


READY_RESULT: dict[str, Any] = {
    "status": "ready",
    "duration_s": 61.5,
    "renditions": [
        {"name": "360p", "width": 640, "height": 360, "bandwidth": 900_000},
        {"name": "720p", "width": 1280, "height": 720, "bandwidth": 3_200_000},
    ],
}


class CatalogDriver:
    """The steps most tests share, through the API wherever the API offers them."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.app = app
        self.client = client
        self.minter = minter

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        sessions: async_sessionmaker[AsyncSession] = self.app.state.sessions
        return sessions

    @property
    def storage(self) -> Storage:
        storage: Storage = self.app.state.storage
        return storage

    @property
    def settings(self) -> CatalogSettings:
        settings: CatalogSettings = self.app.state.settings
        return settings

    def user(self, role: str = "viewer", **claims: Any) -> User:
        user_id = uuid.uuid4()
        return User(id=user_id, role=role, token=self.minter.token(user_id, role, **claims))

    def creator(self) -> User:
        return self.user("creator")

    def internal_headers(self, caller: str = "transcoder") -> dict[str, str]:
        return {SERVICE_TOKEN_HEADER: mint_service_token(self.settings.internal_secret, caller)}

    async def create_video(self, owner: User, **fields: Any) -> dict[str, Any]:
        body = {"title": f"Video {uuid.uuid4().hex[:6]}", **fields}
        response = await self.client.post("/videos", json=body, headers=owner.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def upload_done(self, video_id: str) -> None:
        """What the upload code does once the file is stored: the video moves to processing."""
        vid = uuid.UUID(video_id)

        async def nothing(_: uuid.UUID) -> None:
            return None

        async with transaction(self.sessions) as session:
            await service.mark_uploaded(
                session, vid, source_key=f"{service.upload_prefix(vid)}source", on_committed=nothing
            )

    async def report_result(self, video_id: str, **result: Any) -> httpx.Response:
        return await self.client.post(
            f"/internal/videos/{video_id}/transcode-result",
            json={**READY_RESULT, **result},
            headers=self.internal_headers(),
        )

    async def ready_video(self, owner: User | None = None, **fields: Any) -> dict[str, Any]:
        """A video through its whole lifecycle: created, uploaded, transcoded, ready."""
        owner = owner or self.creator()
        video = await self.create_video(owner, **fields)
        await self.upload_done(video["id"])
        response = await self.report_result(video["id"])
        assert response.status_code == 200, response.text
        return await self.get_video(video["id"], owner)

    async def get_video(self, video_id: str, user: User | None = None) -> dict[str, Any]:
        response = await self.client.get(f"/videos/{video_id}", headers=user.headers if user else {})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.sessions() as session:
            return await session.scalar(text(sql), params)


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[tuple[ArqRedis, str]]:
    """An arq pool on a queue of the test's own."""
    queue = f"streamify:test-transcode:{uuid.uuid4().hex}"
    arq = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    try:
        yield arq, queue
    finally:
        await arq.delete(queue)
        await arq.aclose()


@pytest.fixture(scope="session")
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture(scope="session")
async def catalog_database_url() -> str:
    return await migrated_database("catalog")


def catalog_settings_for(
    database_url: str, redis_url: str, storage: StorageSettings, **overrides: Any
) -> CatalogSettings:
    # Tests run the stall sweep when they choose (test_stalled_processing.py runs the lifespan's).
    values = {"processing_sweep_interval_s": 0, **overrides}
    return CatalogSettings(database_url=database_url, redis_url=redis_url, storage=storage, **values)


@pytest.fixture(scope="session")
def catalog_settings(
    catalog_database_url: str,
    redis_url: str,
    service_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> CatalogSettings:
    storage_dir: Path = tmp_path_factory.mktemp("catalog-storage")
    storage = StorageSettings(storage_backend="local", storage_local_dir=storage_dir)
    return catalog_settings_for(catalog_database_url, redis_url, storage)


@pytest.fixture(scope="session")
async def catalog_app(
    asgi_client: Callable[..., Any], catalog_settings: CatalogSettings, minter: TokenMinter
) -> AsyncIterator[FastAPI]:
    """The catalog service with its lifespan running for the whole session."""
    app = create_app(catalog_settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture
async def catalog(catalog_app: FastAPI, minter: TokenMinter) -> AsyncIterator[CatalogDriver]:
    transport = httpx.ASGITransport(app=catalog_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield CatalogDriver(catalog_app, client, minter)


# --- generated media (uploads; made once per run) ---------------------------------------------


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def small_video(media_dir: Path) -> Path:
    """A 3 s 320x240 H.264/AAC MP4 (tens of KiB)."""
    return make_video(media_dir / "small.mp4")


@pytest.fixture(scope="session")
def large_video(media_dir: Path) -> Path:
    """A 4 s 640x360 MP4 of about 10 MiB: big enough for several 5 MiB multipart parts."""
    return make_video(media_dir / "large.mp4", size="640x360", seconds=4, bitrate="20M", noise=True)


@pytest.fixture(scope="session")
def small_video_bytes(small_video: Path) -> bytes:
    return small_video.read_bytes()


@pytest.fixture(scope="session")
def large_video_bytes(large_video: Path) -> bytes:
    return large_video.read_bytes()
