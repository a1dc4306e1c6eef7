"""With S3 storage (a real S3-compatible server over HTTP): deleting a video removes its objects
from the bucket, and thumbnails are served as redirects to short-lived presigned URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from tests.catalog.conftest import CatalogDriver, catalog_settings_for
from tests.fixtures_s3 import S3Server
from tests.identities import TokenMinter


@pytest.fixture(scope="module")
async def s3_catalog_app(
    asgi_client: Callable[..., Any],
    catalog_settings: CatalogSettings,
    s3_server: S3Server,
    minter: TokenMinter,
) -> AsyncIterator[FastAPI]:
    settings = catalog_settings_for(
        catalog_settings.database_url, catalog_settings.redis_url, s3_server.settings()
    )
    app = create_app(settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture
async def s3_catalog(s3_catalog_app: FastAPI, minter: TokenMinter) -> AsyncIterator[CatalogDriver]:
    transport = httpx.ASGITransport(app=s3_catalog_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield CatalogDriver(s3_catalog_app, client, minter)


class TestOnS3:
    async def test_deleting_a_video_empties_its_keys_in_the_bucket(self, s3_catalog: CatalogDriver):
        owner = s3_catalog.creator()
        video = await s3_catalog.ready_video(owner)
        other = await s3_catalog.ready_video(owner)
        storage = s3_catalog.storage
        vid = video["id"]
        for key in (f"videos/{vid}/master.m3u8", f"videos/{vid}/360p/seg_0.ts", f"thumbnails/{vid}.jpg"):
            await storage.put(key, b"data")
        await storage.put(f"videos/{other['id']}/master.m3u8", b"keep")
        # An upload that was never finished: its multipart upload must not linger either.
        await storage.create_multipart(f"uploads/{vid}/source")

        response = await s3_catalog.client.delete(f"/videos/{vid}", headers=owner.headers)

        assert response.status_code == 204
        assert [info.key async for info in storage.list(f"videos/{vid}/")] == []
        assert not await storage.exists(f"thumbnails/{vid}.jpg")
        assert await storage.list_multipart_uploads(f"uploads/{vid}/") == []
        assert await storage.exists(f"videos/{other['id']}/master.m3u8")

    async def test_the_thumbnail_redirects_to_a_presigned_url(self, s3_catalog: CatalogDriver):
        video = await s3_catalog.create_video(s3_catalog.creator())
        await s3_catalog.upload_done(video["id"])
        key = f"thumbnails/{video['id']}.jpg"
        await s3_catalog.storage.put(key, b"\xff\xd8jpeg", content_type="image/jpeg")
        await s3_catalog.report_result(video["id"], thumbnail_key=key)

        response = await s3_catalog.client.get(f"/videos/{video['id']}/thumbnail")

        assert response.status_code == 307
        async with httpx.AsyncClient() as outside:
            image = await outside.get(response.headers["location"])
        assert image.status_code == 200
        assert image.content == b"\xff\xd8jpeg"
