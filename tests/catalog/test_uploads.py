"""Resumable (tus 1.0) and one-shot uploads into local-directory storage: a creator uploads a
video's file in pieces, the video moves to processing with a transcode job queued, and everything
a client can get wrong is refused with the protocol's answer before bytes are stored."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.jobs import JobStatus
from fastapi import FastAPI

from common.storage import LocalStorage, StorageSettings
from services.catalog import upload_service
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from services.catalog.upload_service import UploadLimits, Uploads
from tests.catalog.conftest import CatalogDriver
from tests.catalog.tus import (
    TUS,
    Tus,
    backdate_upload,
    metadata,
    recorded_part_sizes,
    stored_bytes,
    transcode_job,
    upload_settings,
)
from tests.identities import TokenMinter
from tests.media import make_audio, make_text_file


@pytest.fixture(scope="module")
async def uploads_app(
    asgi_client: Callable[..., Any],
    catalog_settings: CatalogSettings,
    minter: TokenMinter,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FastAPI]:
    storage = StorageSettings(storage_backend="local", storage_local_dir=tmp_path_factory.mktemp("uploads"))
    app = create_app(upload_settings(catalog_settings, storage), jwks_loader=minter.loader)
    async with asgi_client(app):
        yield app


@pytest.fixture
async def catalog(uploads_app: FastAPI, minter: TokenMinter) -> AsyncIterator[CatalogDriver]:
    transport = httpx.ASGITransport(app=uploads_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield CatalogDriver(uploads_app, client, minter)


@pytest.fixture
def tus(catalog: CatalogDriver) -> Tus:
    return Tus(catalog)


class TestProtocol:
    async def test_options_advertises_version_extensions_and_the_size_limit(self, tus: Tus):
        response = await tus.client.options("/uploads")

        assert response.status_code == 204
        assert response.headers["tus-version"] == "1.0.0"
        assert set(response.headers["tus-extension"].split(",")) == {"creation", "termination", "expiration"}
        assert int(response.headers["tus-max-size"]) == tus.catalog.settings.max_upload_bytes
        assert response.headers["tus-resumable"] == "1.0.0"

    @pytest.mark.parametrize("version", [None, "0.2.2"])
    async def test_other_protocol_versions_are_refused_with_412(self, tus: Tus, version: str | None):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        headers = {"Tus-Resumable": version} if version else {}
        response = await tus.client.post(
            "/uploads",
            headers={
                **owner.headers,
                **headers,
                "Upload-Length": "10",
                "Upload-Metadata": metadata(video_id=video["id"]),
            },
        )

        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-resumable"] == "1.0.0"
        assert response.json()["code"] == "tus_version_unsupported"

    async def test_creation_answers_with_the_location_and_an_expiry(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)

        response = await tus.create(owner, video["id"], 1234)

        assert response.status_code == 201, response.text
        upload_id = response.json()["id"]
        assert response.headers["location"] == f"/api/v1/uploads/{upload_id}"
        assert response.headers["tus-resumable"] == "1.0.0"
        expires = datetime.strptime(response.headers["upload-expires"], "%a, %d %b %Y %H:%M:%S GMT")
        assert expires.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=1)
        head = await tus.head(owner, tus.path(response.headers["location"]))
        assert head.status_code == 200
        assert head.headers["upload-offset"] == "0"
        assert head.headers["upload-length"] == "1234"
        assert head.headers["cache-control"] == "no-store"
        assert "video_id" in head.headers["upload-metadata"]
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "uploading"

    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ({"Upload-Length": None}, "invalid_upload_request"),
            ({"Upload-Length": "-5"}, "invalid_upload_request"),
            ({"Upload-Metadata": "filename Zm9vLm1wNA=="}, "invalid_upload_request"),
            ({"Upload-Metadata": "video_id not-base64!"}, "invalid_upload_request"),
            ({"Upload-Defer-Length": "1"}, "invalid_upload_request"),
        ],
    )
    async def test_creation_needs_a_length_and_the_video_in_metadata(
        self, tus: Tus, headers: dict[str, str | None], code: str
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        base = {
            **TUS,
            **owner.headers,
            "Upload-Length": "10",
            "Upload-Metadata": metadata(video_id=video["id"]),
        }
        sent = {key: value for key, value in {**base, **headers}.items() if value is not None}

        response = await tus.client.post("/uploads", headers=sent)

        assert response.status_code == 400
        assert response.json()["code"] == code
        assert response.headers["tus-resumable"] == "1.0.0"

    async def test_a_patch_must_be_an_offset_octet_stream(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 10)

        response = await tus.patch(owner, path, 0, b"0123456789", headers={"Content-Type": "video/mp4"})

        assert response.status_code == 415
        assert await tus.offset(owner, path) == 0


class TestUploading:
    async def test_a_file_sent_in_pieces_becomes_a_processing_video_with_a_queued_transcode(
        self, tus: Tus, small_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = small_video_bytes

        path = await tus.upload(owner, video["id"], data, chunk=len(data) // 3 + 1)

        assert await tus.offset(owner, path) == len(data)
        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "processing"
        assert current["progress"] == 0
        source = f"uploads/{video['id']}/source"
        assert await stored_bytes(tus.catalog, source) == data
        status, info = await transcode_job(tus.catalog.app, video["id"])
        assert status == JobStatus.queued
        assert info.function == "transcode_video"
        assert info.args == (video["id"],)
        # Nothing of the upload is left behind but the file itself.
        assert [o.key async for o in tus.catalog.storage.list(f"uploads/{video['id']}/")] == [source]
        assert await tus.catalog.storage.list_multipart_uploads(f"uploads/{video['id']}/") == []

    async def test_a_multi_part_file_is_stored_byte_for_byte(self, tus: Tus, large_video_bytes: bytes):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = large_video_bytes
        assert len(data) > 2 * 5 * 1024 * 1024  # more than two 5 MiB parts

        # 3 MiB PATCHes: parts are cut across requests, a tail is carried between them.
        path = await tus.upload(owner, video["id"], data, chunk=3 * 1024 * 1024)

        assert await tus.offset(owner, path) == len(data)
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == data
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"
        sizes = await recorded_part_sizes(tus.catalog, path)
        assert len(sizes) >= 3
        assert all(size >= 5 * 1024 * 1024 for size in sizes[:-1])

    async def test_a_wrong_offset_is_refused_with_409_and_nothing_is_stored(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 100)
        assert (await tus.patch(owner, path, 0, b"a" * 40)).status_code == 204

        response = await tus.patch(owner, path, 10, b"b" * 40)

        assert response.status_code == 409
        assert response.json()["code"] == "upload_offset_mismatch"
        assert response.headers["tus-resumable"] == "1.0.0"
        assert await tus.offset(owner, path) == 40

    async def test_a_body_shorter_than_announced_counts_what_arrived(
        self, tus: Tus, small_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = small_video_bytes
        path = await tus.start(owner, video["id"], len(data))

        response = await tus.patch(owner, path, 0, data[:1000], headers={"Content-Length": "5000"})

        assert response.status_code == 204
        assert response.headers["upload-offset"] == "1000"
        rest = await tus.patch(owner, path, 1000, data[1000:])
        assert rest.status_code == 204
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == data

    async def test_a_second_writer_is_told_to_retry_while_one_is_writing(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 100)
        lock = tus.catalog.app.state.redis.lock(f"catalog:upload-lock:{video['id']}", timeout=30)
        assert await lock.acquire(blocking=False)
        try:
            response = await tus.patch(owner, path, 0, b"x" * 10)
        finally:
            await lock.release()

        assert response.status_code == 423
        assert response.json()["code"] == "upload_locked"
        assert (await tus.patch(owner, path, 0, b"x" * 10)).status_code == 204

    async def test_creating_again_replaces_an_unfinished_upload(self, tus: Tus, small_video_bytes: bytes):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = small_video_bytes
        first = await tus.start(owner, video["id"], len(data))
        await tus.patch(owner, first, 0, data[:100])

        second = await tus.upload(owner, video["id"], data, chunk=len(data))

        assert (await tus.head(owner, first)).status_code == 404
        assert await tus.offset(owner, second) == len(data)
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"

    async def test_a_video_whose_file_arrived_takes_no_second_upload(
        self, tus: Tus, small_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        await tus.upload(owner, video["id"], small_video_bytes, chunk=len(small_video_bytes))

        again = await tus.create(owner, video["id"], len(small_video_bytes))
        put = await tus.client.put(
            f"/videos/{video['id']}/source", content=small_video_bytes, headers=owner.headers
        )

        assert again.status_code == 409
        assert again.json()["code"] == "invalid_transition"
        assert put.status_code == 409

    async def test_a_one_shot_put_waits_for_an_unfinished_resumable_upload(
        self, tus: Tus, small_video_bytes: bytes
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        await tus.start(owner, video["id"], len(small_video_bytes))

        response = await tus.client.put(
            f"/videos/{video['id']}/source", content=small_video_bytes, headers=owner.headers
        )

        assert response.status_code == 409
        assert response.json()["code"] == "upload_in_progress"

    async def test_when_ffprobe_is_unavailable_the_upload_is_kept_and_finished_later(
        self, tus: Tus, small_video_bytes: bytes, monkeypatch: pytest.MonkeyPatch
    ):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], len(small_video_bytes))
        monkeypatch.setenv("FFPROBE", "/nonexistent/ffprobe")

        response = await tus.patch(owner, path, 0, small_video_bytes)

        assert response.status_code == 503
        assert response.json()["code"] == "probe_unavailable"
        assert await tus.offset(owner, path) == len(small_video_bytes)
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "uploading"

        monkeypatch.delenv("FFPROBE")
        await upload_service.expire_abandoned_uploads(tus.catalog.app.state.uploads)

        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "processing"
        assert await stored_bytes(tus.catalog, f"uploads/{video['id']}/source") == small_video_bytes


class TestLimits:
    async def test_an_oversized_file_is_refused_with_413_before_anything_is_stored(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)

        response = await tus.create(owner, video["id"], tus.catalog.settings.max_upload_bytes + 1)

        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"
        assert response.headers["tus-resumable"] == "1.0.0"
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"
        assert await tus.catalog.storage.list_multipart_uploads(f"uploads/{video['id']}/") == []

    async def test_bytes_beyond_the_upload_length_are_refused(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 10)

        response = await tus.patch(owner, path, 0, b"y" * 11)

        assert response.status_code == 413
        assert await tus.offset(owner, path) == 0

    async def test_bytes_beyond_the_length_are_refused_even_without_content_length(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 10)

        async def chunked() -> AsyncIterator[bytes]:
            yield b"y" * 6
            yield b"y" * 6

        response = await tus.patch(owner, path, 0, chunked())

        assert response.status_code == 413
        assert await tus.offset(owner, path) == 0


class TestWhoMayUpload:
    async def test_only_the_videos_creator_may_create_an_upload(self, tus: Tus):
        owner = tus.catalog.creator()
        public = await tus.catalog.create_video(owner)
        private = await tus.catalog.create_video(owner, visibility="private")
        stranger = tus.catalog.creator()

        refused = await tus.create(stranger, public["id"], 10)
        hidden = await tus.create(stranger, private["id"], 10)

        assert refused.status_code == 403
        assert refused.json()["code"] == "not_owner"
        assert hidden.status_code == 404
        assert (await tus.catalog.get_video(public["id"], owner))["status"] == "awaiting_upload"

    async def test_strangers_cannot_see_patch_or_terminate_someone_elses_upload(self, tus: Tus):
        owner = tus.catalog.creator()
        public = await tus.catalog.create_video(owner)
        private = await tus.catalog.create_video(owner, visibility="private")
        public_path = await tus.start(owner, public["id"], 10)
        private_path = await tus.start(owner, private["id"], 10)
        stranger = tus.catalog.creator()

        assert (await tus.head(stranger, public_path)).status_code == 403
        assert (await tus.patch(stranger, public_path, 0, b"z" * 10)).status_code == 403
        assert (await tus.client.delete(public_path, headers={**TUS, **stranger.headers})).status_code == 403
        assert (await tus.head(stranger, private_path)).status_code == 404
        assert (await tus.patch(stranger, private_path, 0, b"z" * 10)).status_code == 404
        assert (await tus.client.delete(private_path, headers={**TUS, **stranger.headers})).status_code == 404
        assert (await tus.client.head(public_path, headers=TUS)).status_code == 401
        assert await tus.offset(owner, public_path) == 0

    async def test_an_unknown_upload_is_404(self, tus: Tus):
        owner = tus.catalog.creator()
        assert (await tus.head(owner, f"/uploads/{uuid.uuid4()}")).status_code == 404
        assert (await tus.head(owner, "/uploads/not-an-id")).status_code == 404


class TestContentSniffing:
    async def test_a_text_file_named_mp4_ends_failed_with_a_readable_reason(self, tus: Tus, tmp_path: Path):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = make_text_file(tmp_path / "notes.mp4").read_bytes()

        path = await tus.upload(owner, video["id"], data, chunk=len(data))

        assert await tus.offset(owner, path) == len(data)
        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "failed"
        assert current["failure_reason"] == "The file is not a video we can read."
        status, _ = await transcode_job(tus.catalog.app, video["id"])
        assert status == JobStatus.not_found

    async def test_a_truncated_mp4_ends_failed(self, tus: Tus, small_video_bytes: bytes):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        # ffmpeg writes the index (moov) last: the first half of the file cannot be read.
        data = small_video_bytes[: len(small_video_bytes) // 2]

        await tus.upload(owner, video["id"], data, chunk=len(data))

        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "failed"
        assert current["failure_reason"] == "The file is not a video we can read."

    async def test_random_bytes_end_failed(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)

        await tus.upload(owner, video["id"], os.urandom(64 * 1024), chunk=20_000)

        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "failed"
        assert current["failure_reason"] == "The file is not a video we can read."

    async def test_a_zero_byte_file_ends_failed_at_creation(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)

        response = await tus.create(owner, video["id"], 0)

        assert response.status_code == 201
        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "failed"
        assert current["failure_reason"] == "The file is empty."

    async def test_an_audio_only_file_is_not_a_video(self, tus: Tus, tmp_path: Path):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = make_audio(tmp_path / "tone.m4a").read_bytes()

        await tus.upload(owner, video["id"], data, chunk=len(data))

        current = await tus.catalog.get_video(video["id"], owner)
        assert current["status"] == "failed"
        assert current["failure_reason"] == "The file is not a video we can read."


class TestTermination:
    async def test_terminating_drops_the_stored_bytes_and_the_video_awaits_a_new_upload(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 1000)
        await tus.patch(owner, path, 0, b"q" * 300)
        storage = tus.catalog.storage
        assert len(await storage.list_multipart_uploads(f"uploads/{video['id']}/")) == 1

        response = await tus.client.delete(path, headers={**TUS, **owner.headers})

        assert response.status_code == 204
        assert response.headers["tus-resumable"] == "1.0.0"
        assert await storage.list_multipart_uploads(f"uploads/{video['id']}/") == []
        assert [o.key async for o in storage.list(f"uploads/{video['id']}/")] == []
        assert (await tus.head(owner, path)).status_code == 404
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_a_completed_upload_cannot_be_terminated(self, tus: Tus, small_video_bytes: bytes):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        data = small_video_bytes
        path = await tus.upload(owner, video["id"], data, chunk=len(data))

        response = await tus.client.delete(path, headers={**TUS, **owner.headers})

        assert response.status_code == 409
        assert response.json()["code"] == "upload_completed"


class TestExpiry:
    async def test_an_abandoned_upload_expires_and_its_multipart_upload_is_aborted(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 1000)
        await tus.patch(owner, path, 0, b"e" * 100)
        await backdate_upload(tus.catalog, path)
        assert (await tus.head(owner, path)).status_code == 410

        dropped = await upload_service.expire_abandoned_uploads(tus.catalog.app.state.uploads)

        assert dropped >= 1
        assert await tus.catalog.storage.list_multipart_uploads(f"uploads/{video['id']}/") == []
        assert [o.key async for o in tus.catalog.storage.list(f"uploads/{video['id']}/")] == []
        assert (await tus.head(owner, path)).status_code == 404
        assert (await tus.catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_uploads_still_in_time_are_kept(self, tus: Tus):
        owner = tus.catalog.creator()
        video = await tus.catalog.create_video(owner)
        path = await tus.start(owner, video["id"], 1000)
        await tus.patch(owner, path, 0, b"k" * 100)

        await upload_service.expire_abandoned_uploads(tus.catalog.app.state.uploads)

        assert await tus.offset(owner, path) == 100
        assert len(await tus.catalog.storage.list_multipart_uploads(f"uploads/{video['id']}/")) == 1

    async def test_multipart_uploads_no_upload_knows_are_aborted_once_old(self, tus: Tus, tmp_path: Path):
        storage = LocalStorage(tmp_path / "orphans")
        await storage.ensure_bucket()
        orphan = await storage.create_multipart(f"uploads/{uuid.uuid4()}/source")
        base: Uploads = tus.catalog.app.state.uploads
        uploads = Uploads(
            sessions=base.sessions,
            storage=storage,
            redis=base.redis,
            limits=UploadLimits.from_settings(tus.catalog.settings),
            on_uploaded=base.on_uploaded,
        )

        await upload_service.expire_abandoned_uploads(uploads)
        assert [u.upload_id for u in await storage.list_multipart_uploads("uploads/")] == [orphan]

        later = datetime.now(UTC) + timedelta(seconds=tus.catalog.settings.upload_expire_s + 60)
        await upload_service.expire_abandoned_uploads(uploads, now=later)
        assert await storage.list_multipart_uploads("uploads/") == []


class TestOneShotSource:
    async def put(
        self, catalog: CatalogDriver, user: Any, video_id: str, content: Any, **headers: str
    ) -> httpx.Response:
        return await catalog.client.put(
            f"/videos/{video_id}/source", content=content, headers={**user.headers, **headers}
        )

    async def test_a_small_file_in_one_request_becomes_processing(
        self, catalog: CatalogDriver, small_video_bytes: bytes
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        data = small_video_bytes

        response = await self.put(catalog, owner, video["id"], data)

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "processing"
        assert await stored_bytes(catalog, f"uploads/{video['id']}/source") == data
        status, _ = await transcode_job(catalog.app, video["id"])
        assert status == JobStatus.queued

    async def test_a_text_file_is_refused_and_the_video_fails(self, catalog: CatalogDriver, tmp_path: Path):
        owner = catalog.creator()
        video = await catalog.create_video(owner)

        response = await self.put(
            catalog, owner, video["id"], make_text_file(tmp_path / "x.mp4").read_bytes()
        )

        assert response.status_code == 422
        assert response.json()["code"] == "not_a_video"
        assert response.json()["detail"] == "The file is not a video we can read."
        assert (await catalog.get_video(video["id"], owner))["status"] == "failed"

    async def test_a_file_over_the_limit_is_refused_before_it_is_read(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        too_big = catalog.settings.max_source_put_bytes + 1

        async def never() -> AsyncIterator[bytes]:
            raise AssertionError("the body must not be read")
            yield b""

        response = await self.put(catalog, owner, video["id"], never(), **{"Content-Length": str(too_big)})

        assert response.status_code == 413
        assert (await catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_content_length_is_required(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)

        async def chunked() -> AsyncIterator[bytes]:
            yield b"abc"

        response = await self.put(catalog, owner, video["id"], chunked())

        assert response.status_code == 411
        assert response.json()["code"] == "length_required"

    async def test_a_body_shorter_than_announced_leaves_the_video_awaiting_upload(
        self, catalog: CatalogDriver, small_video_bytes: bytes
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        data = small_video_bytes

        response = await self.put(
            catalog, owner, video["id"], data[:500], **{"Content-Length": str(len(data))}
        )

        assert response.status_code == 400
        assert response.json()["code"] == "incomplete_upload"
        assert (await catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"
        assert not await catalog.storage.exists(f"uploads/{video['id']}/source")

    async def test_only_the_creator_may_put_the_source(
        self, catalog: CatalogDriver, small_video_bytes: bytes
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner)

        response = await self.put(catalog, catalog.creator(), video["id"], small_video_bytes)

        assert response.status_code == 403
        assert (await catalog.get_video(video["id"], owner))["status"] == "awaiting_upload"

    async def test_a_zero_byte_file_fails_the_video(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)

        response = await self.put(catalog, owner, video["id"], b"")

        assert response.status_code == 422
        assert response.json()["detail"] == "The file is empty."
        assert (await catalog.get_video(video["id"], owner))["failure_reason"] == "The file is empty."
