"""The transcoder's hand-off: progress while processing, and an idempotent result."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.catalog.conftest import READY_RESULT, CatalogDriver


async def processing_video(catalog: CatalogDriver) -> dict:
    video = await catalog.create_video(catalog.creator())
    await catalog.upload_done(video["id"])
    return video


class TestServiceCredentials:
    async def test_internal_routes_refuse_callers_without_a_service_credential(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        path = f"/internal/videos/{video['id']}/progress"
        user = catalog.user("admin")
        anonymous = await catalog.client.post(path, json={"progress": 5})
        with_user_token = await catalog.client.post(path, json={"progress": 5}, headers=user.headers)
        forged = await catalog.client.post(path, json={"progress": 5}, headers={"X-Service-Token": "forged"})
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "service_token_required")
        assert with_user_token.status_code == 401
        assert (forged.status_code, forged.json()["code"]) == (401, "invalid_service_token")

    async def test_only_the_transcoder_reports_progress_and_results(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        headers = catalog.internal_headers("billing")
        progress = await catalog.client.post(
            f"/internal/videos/{video['id']}/progress", json={"progress": 5}, headers=headers
        )
        result = await catalog.client.post(
            f"/internal/videos/{video['id']}/transcode-result", json=READY_RESULT, headers=headers
        )
        assert (progress.status_code, progress.json()["code"]) == (403, "service_not_allowed")
        assert result.status_code == 403

    async def test_other_services_read_what_they_need_about_a_video(self, catalog: CatalogDriver):
        video = await catalog.ready_video(price_per_minute=12, visibility="private")
        response = await catalog.client.get(
            f"/internal/videos/{video['id']}", headers=catalog.internal_headers("streaming")
        )
        body = response.json()
        assert (body["status"], body["visibility"], body["price_per_minute"]) == ("ready", "private", 12)
        assert body["creator_id"] == video["creator_id"]
        assert body["hls_master_key"] == f"videos/{video['id']}/master.m3u8"
        assert body["source_key"] == f"uploads/{video['id']}/source"


class TestProgress:
    async def test_progress_is_visible_while_processing_and_never_goes_back(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        path = f"/internal/videos/{video['id']}/progress"
        headers = catalog.internal_headers()
        assert (await catalog.get_video(video["id"]))["progress"] == 0
        assert (await catalog.client.post(path, json={"progress": 40}, headers=headers)).json()[
            "progress"
        ] == 40
        late = await catalog.client.post(path, json={"progress": 25}, headers=headers)
        assert (late.status_code, late.json()["progress"]) == (200, 40)
        shown = await catalog.get_video(video["id"])
        assert (shown["status"], shown["progress"]) == ("processing", 40)

        await catalog.report_result(video["id"])
        after = await catalog.client.post(path, json={"progress": 99}, headers=headers)
        assert (after.status_code, after.json()["code"]) == (409, "not_processing")
        assert (await catalog.get_video(video["id"]))["progress"] is None

    async def test_progress_before_the_upload_or_for_a_missing_video_is_refused(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        headers = catalog.internal_headers()
        early = await catalog.client.post(
            f"/internal/videos/{video['id']}/progress", json={"progress": 1}, headers=headers
        )
        missing = await catalog.client.post(
            f"/internal/videos/{uuid.uuid4()}/progress", json={"progress": 1}, headers=headers
        )
        assert (early.status_code, early.json()["code"]) == (409, "not_processing")
        assert (missing.status_code, missing.json()["code"]) == (404, "video_not_found")

    @pytest.mark.parametrize("progress", [-1, 101, 50.5, "7"])
    async def test_progress_must_be_a_percentage(self, catalog: CatalogDriver, progress):
        video = await processing_video(catalog)
        response = await catalog.client.post(
            f"/internal/videos/{video['id']}/progress",
            json={"progress": progress},
            headers=catalog.internal_headers(),
        )
        assert response.status_code == 422


class TestTranscodeResult:
    async def test_a_ready_result_publishes_the_video_with_its_renditions(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        response = await catalog.report_result(video["id"], thumbnail_key=f"videos/{video['id']}/thumb.jpg")
        assert response.status_code == 200, response.text
        shown = await catalog.get_video(video["id"])
        assert shown["status"] == "ready"
        assert shown["duration_s"] == 61.5
        assert shown["renditions"] == READY_RESULT["renditions"]
        assert shown["published_at"] is not None
        assert shown["thumbnail_url"] == f"/api/v1/videos/{video['id']}/thumbnail"

    async def test_the_same_result_twice_is_accepted_and_changes_nothing(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        first = await catalog.report_result(video["id"])
        before = await catalog.get_video(video["id"])
        second = await catalog.report_result(video["id"])
        assert (first.status_code, second.status_code) == (200, 200)
        assert await catalog.get_video(video["id"]) == before

    async def test_the_same_result_sent_concurrently_is_accepted_by_both(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        responses = await asyncio.gather(*(catalog.report_result(video["id"]) for _ in range(4)))
        assert [r.status_code for r in responses] == [200] * 4

    async def test_a_different_result_after_the_final_one_is_a_conflict(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        await catalog.report_result(video["id"])
        failed = await catalog.report_result(
            video["id"], status="failed", failure_reason="nope", duration_s=None, renditions=[]
        )
        longer = await catalog.report_result(video["id"], duration_s=99.0)
        assert (failed.status_code, failed.json()["code"]) == (409, "result_conflict")
        assert longer.status_code == 409
        assert (await catalog.get_video(video["id"]))["status"] == "ready"

    async def test_a_failed_result_keeps_its_reason_for_the_creator(self, catalog: CatalogDriver):
        video = await processing_video(catalog)
        reason = "The file is not a video: no video stream was found."
        failure: dict[str, Any] = {
            "status": "failed",
            "failure_reason": reason,
            "duration_s": None,
            "renditions": [],
        }
        assert (await catalog.report_result(video["id"], **failure)).status_code == 200
        assert (await catalog.report_result(video["id"], **failure)).status_code == 200
        shown = await catalog.get_video(video["id"])
        assert (shown["status"], shown["failure_reason"], shown["progress"]) == ("failed", reason, None)

    async def test_a_result_for_a_video_not_yet_uploaded_or_deleted_is_refused(self, catalog: CatalogDriver):
        owner = catalog.creator()
        waiting = await catalog.create_video(owner)
        early = await catalog.report_result(waiting["id"])
        processing = await processing_video(catalog)
        await catalog.client.delete(f"/videos/{processing['id']}", headers=catalog.user("admin").headers)
        deleted = await catalog.report_result(processing["id"])
        assert (early.status_code, early.json()["code"]) == (409, "invalid_transition")
        assert (deleted.status_code, deleted.json()["code"]) == (404, "video_not_found")

    @pytest.mark.parametrize(
        "result",
        [
            {"renditions": []},
            {"duration_s": None},
            {"failure_reason": "both"},
            {"status": "failed"},
            {"renditions": [{"name": "720p", "width": 0, "height": 720, "bandwidth": 1}]},
            {"renditions": [{"name": "Bad Name", "width": 1, "height": 1, "bandwidth": 1}]},
            {"renditions": [{"name": "720p", "width": 1, "height": 1, "bandwidth": 1}] * 2},
            {"extra": True},
        ],
        ids=[
            "no-renditions",
            "no-duration",
            "ready-with-reason",
            "failed-without-reason",
            "zero-width",
            "bad-name",
            "duplicate-names",
            "extra-field",
        ],
    )
    async def test_inconsistent_results_are_422(self, catalog: CatalogDriver, result):
        video = await processing_video(catalog)
        response = await catalog.report_result(video["id"], **result)
        assert response.status_code == 422, response.text
        assert (await catalog.get_video(video["id"]))["status"] == "processing"

    @pytest.mark.parametrize(
        "key",
        ["thumbnails/other.jpg", "videos/{other}/thumb.jpg", "videos/{id}/../x.jpg", "uploads/{id}/source"],
    )
    async def test_a_thumbnail_outside_the_videos_own_keys_is_refused(self, catalog: CatalogDriver, key):
        video = await processing_video(catalog)
        key = key.format(id=video["id"], other=uuid.uuid4())
        response = await catalog.report_result(video["id"], thumbnail_key=key)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_storage_key")
