"""Uploads into S3 (a real S3-compatible server over HTTP), through a real HTTP server: parts go
into an S3 multipart upload, ffprobe reads the result through a presigned URL, a PATCH cut off
mid-body resumes from the server's offset, and a standard tus client (tuspy) uploads and resumes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.jobs import JobStatus
from fastapi import FastAPI
from tusclient.client import TusClient

from services.catalog import upload_service
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from tests.catalog.conftest import CatalogDriver
from tests.catalog.tus import (
    OCTETS,
    TUS,
    Tus,
    backdate_upload,
    recorded_part_sizes,
    serving,
    stored_bytes,
    transcode_job,
    upload_settings,
)
from tests.fixtures_s3 import S3Server
from tests.identities import TokenMinter, User
from tests.media import make_text_file

MiB = 1024 * 1024


@pytest.fixture(scope="module")
async def s3_uploads_app(
    asgi_client: Callable[..., Any],
    catalog_settings: CatalogSettings,
    s3_server: S3Server,
    minter: TokenMinter,
) -> AsyncIterator[FastAPI]:
    # Served without the gateway's /api/v1 prefix, so the Location a tus client follows is ours.
    settings = upload_settings(catalog_settings, s3_server.settings(), public_api_prefix="")
    app = create_app(settings, jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture(scope="module")
async def base_url(s3_uploads_app: FastAPI) -> AsyncIterator[str]:
    async with serving(s3_uploads_app) as url:
        yield url


@pytest.fixture
async def catalog(s3_uploads_app: FastAPI, minter: TokenMinter) -> AsyncIterator[CatalogDriver]:
    transport = httpx.ASGITransport(app=s3_uploads_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield CatalogDriver(s3_uploads_app, client, minter)


@pytest.fixture
def tus(catalog: CatalogDriver) -> Tus:
    return Tus(catalog)


class TestOnS3:
    async def test_a_multi_part_upload_lands_byte_for_byte_and_is_probed_through_a_presigned_url(
        self, tus: Tus, large_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = large_video_bytes

        path = await tus.upload(owner, video["id"], data, chunk=4 * MiB + 12345)

        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == data
        assert len(await recorded_part_sizes(tus.catalog, path)) >= 3
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"
        status, _ = await transcode_job(tus.catalog.app, video["id"])
        assert status == JobStatus.queued

    async def test_termination_aborts_the_multipart_upload(self, tus: Tus, large_video_bytes: bytes):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], len(large_video_bytes))
        await tus.patch(owner, path, 0, large_video_bytes[: 6 * MiB])
        storage = tus.catalog.storage
        [multipart] = await storage.list_multipart_uploads(f"uploads/{video['id']}/")
        assert len(await storage.list_parts(multipart.key, multipart.upload_id)) == 1

        response = await tus.client.delete(path, headers={**TUS, **owner.headers})

        assert response.status_code == 204
        assert await storage.list_multipart_uploads(f"uploads/{video['id']}/") == []
        assert [o.key async for o in storage.list(f"uploads/{video['id']}/")] == []
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_an_expired_upload_is_aborted_in_the_bucket(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 1000)
        await tus.patch(owner, path, 0, b"t" * 10)
        await backdate_upload(tus.catalog, path)

        await upload_service.expire_abandoned_uploads(tus.catalog.app.state.uploads)

        assert await tus.catalog.storage.list_multipart_uploads(f"uploads/{video['id']}/") == []
        assert [o.key async for o in tus.catalog.storage.list(f"uploads/{video['id']}/")] == []
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_a_one_shot_source_is_stored_and_sniffed(
        self, catalog: CatalogDriver, small_video_bytes: bytes, tmp_path: Path
    ):
        owner = catalog.creator()
        video, text_video = await catalog.create_video(owner), await catalog.create_video(owner)

        accepted = await catalog.client.put(
            f"/videos/{video['id']}/source", content=small_video_bytes, headers=owner.headers
        )
        refused = await catalog.client.put(
            f"/videos/{text_video['id']}/source",
            content=make_text_file(tmp_path / "a.mp4").read_bytes(),
            headers=owner.headers,
        )

        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "processing"
        assert await stored_bytes(catalog, f"uploads/{video['id']}/source") == small_video_bytes
        assert refused.status_code == 422
        assert (await catalog.get_video(text_video["id"], owner))["status"] == "failed"


async def _lock_released(catalog: CatalogDriver, video_id: str) -> None:
    """Wait until the server has finished with a request the client walked away from."""
    for _ in range(400):
        if not await catalog.app.state.redis.exists(f"catalog:upload-lock:{video_id}"):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the interrupted PATCH never finished on the server")


async def _patch_cut_off(tus: Tus, base_url: str, user: User, path: str, data: bytes, *, cut: int) -> None:
    """A PATCH announcing all of ``data`` whose connection dies after ``cut`` bytes, once the server
    has stored its first part (bytes still in flight when a connection dies are lost, so waiting
    makes the test say the same thing on every run)."""

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, cut, 256 * 1024):
            yield data[start : min(start + 256 * 1024, cut)]
        for _ in range(400):
            if await tus.offset(user, path) >= 5 * MiB:
                break
            await asyncio.sleep(0.025)
        raise ConnectionResetError("the client's network went away")

    headers = {**TUS, **user.headers, "Upload-Offset": "0", "Content-Type": OCTETS}
    async with httpx.AsyncClient() as client:
        with pytest.raises((ConnectionResetError, httpx.HTTPError)):
            await client.patch(
                f"{base_url}{path}", content=body(), headers={**headers, "Content-Length": str(len(data))}
            )
    await _lock_released(tus.catalog, await _video_of(tus, path))


async def _video_of(tus: Tus, path: str) -> str:
    return str(
        await tus.catalog.scalar(
            "SELECT video_id FROM uploads WHERE id = :id", id=uuid.UUID(path.rsplit("/", 1)[1])
        )
    )


class TestOverRealHttp:
    async def test_a_patch_cut_off_mid_body_resumes_from_the_durable_offset(
        self, base_url: str, tus: Tus, large_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = large_video_bytes
        path = await tus.start(owner, video["id"], len(data))
        cut = 7 * MiB + 4321

        await _patch_cut_off(tus, base_url, owner, path, data, cut=cut)

        offset = await tus.offset(owner, path)
        # What arrived before the connection died is stored (a 5 MiB part, maybe a tail), no more.
        assert 5 * MiB <= offset <= cut
        resumed = await tus.patch(owner, path, offset, data[offset:])
        assert resumed.status_code == 204, resumed.text
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == data
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"


class TestStandardTusClient:
    """tuspy, the tus project's Python client, against the catalog over HTTP."""

    async def test_tuspy_uploads_a_video_in_chunks(
        self, base_url: str, tus: Tus, small_video: Path, small_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)

        def upload() -> str | None:
            client = TusClient(f"{base_url}/uploads", headers=owner.headers)
            uploader = client.uploader(
                file_path=str(small_video), chunk_size=16 * 1024, metadata={"video_id": video["id"]}
            )
            uploader.upload()
            return uploader.url

        url = await asyncio.to_thread(upload)

        assert url is not None and url.startswith(f"{base_url}/uploads/")
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == small_video_bytes
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"
        status, _ = await transcode_job(tus.catalog.app, video["id"])
        assert status == JobStatus.queued

    async def test_tuspy_resumes_an_upload_cut_off_mid_request(
        self, base_url: str, tus: Tus, large_video: Path, large_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], len(large_video_bytes))
        await _patch_cut_off(tus, base_url, owner, path, large_video_bytes, cut=6 * MiB + 17)

        def resume() -> int:
            client = TusClient(f"{base_url}/uploads", headers=owner.headers)
            # Given the upload's URL, tuspy asks for the offset (HEAD) and sends the rest from there.
            uploader = client.uploader(
                file_path=str(large_video), url=f"{base_url}{path}", chunk_size=4 * MiB
            )
            resumed_from = int(uploader.offset)
            uploader.upload()
            return resumed_from

        resumed_from = await asyncio.to_thread(resume)

        assert 5 * MiB <= resumed_from <= 6 * MiB + 17
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == large_video_bytes
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"
