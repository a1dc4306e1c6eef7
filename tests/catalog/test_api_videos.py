"""Creating, reading, editing and deleting videos through the API, and who may do what (BOLA)."""

from __future__ import annotations

import uuid

import pytest

from tests.catalog.conftest import CatalogDriver


class TestCreatingAVideo:
    async def test_a_creator_gets_a_video_awaiting_its_upload_and_where_to_send_it(
        self, catalog: CatalogDriver
    ):
        owner = catalog.creator()
        response = await catalog.client.post(
            "/videos",
            json={
                "title": "  My first video ",
                "description": "Line one\r\nLine two",
                "tags": ["Cooking", "cooking ", "Quick   Meals"],
                "visibility": "unlisted",
                "price_per_minute": 25,
            },
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "awaiting_upload"
        assert body["upload_url"] == "/api/v1/uploads"
        assert body["upload_protocol"] == "tus"
        assert body["upload_metadata"] == {"video_id": body["id"]}
        assert response.headers["location"] == f"/api/v1/videos/{body['id']}"
        assert body["title"] == "My first video"
        assert body["description"] == "Line one\nLine two"
        assert body["tags"] == ["cooking", "quick meals"]
        assert body["creator_id"] == str(owner.id)

        shown = await catalog.get_video(body["id"], owner)
        assert shown["price_per_minute"] == 25
        assert shown["currency"] == "USD"
        assert shown["visibility"] == "unlisted"
        assert shown["progress"] is None
        assert shown["renditions"] == []
        assert shown["duration_s"] is None
        assert shown["thumbnail_url"] is None
        assert shown["failure_reason"] is None
        assert shown["counters"] == {"views": 0, "likes": 0, "dislikes": 0, "comments": 0}

    async def test_a_viewer_may_not_publish(self, catalog: CatalogDriver):
        response = await catalog.client.post("/videos", json={"title": "x"}, headers=catalog.user().headers)
        assert response.status_code == 403
        assert response.json()["code"] == "creator_required"

    async def test_an_admin_may_publish(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.user("admin"))
        assert video["status"] == "awaiting_upload"

    async def test_signing_in_is_required(self, catalog: CatalogDriver):
        response = await catalog.client.post("/videos", json={"title": "x"})
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_a_token_from_an_unknown_key_is_refused(self, catalog: CatalogDriver):
        from tests.identities import TokenMinter

        forged = TokenMinter().token(uuid.uuid4(), "creator")
        response = await catalog.client.post(
            "/videos", json={"title": "x"}, headers={"Authorization": f"Bearer {forged}"}
        )
        assert response.status_code == 401

    async def test_defaults_are_public_and_free(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator(), title="Defaults")
        assert video["visibility"] == "public"
        assert video["price_per_minute"] == 0
        assert video["tags"] == []
        assert video["description"] == ""


class TestInputIsValidated:
    @pytest.mark.parametrize(
        "body",
        [
            {"title": ""},
            {"title": "   "},
            {"title": "x" * 201},
            {"title": "bad\u0007bell"},
            {"title": "two\nlines"},
            {"title": "ok", "description": "x" * 5001},
            {"title": "ok", "description": "nul\u0000char"},
            {"title": "ok", "tags": [f"t{i}" for i in range(21)]},
            {"title": "ok", "tags": ["x" * 31]},
            {"title": "ok", "tags": ["  "]},
            {"title": "ok", "visibility": "secret"},
            {"title": "ok", "price_per_minute": -1},
            {"title": "ok", "price_per_minute": 10_001},
            {"title": "ok", "price_per_minute": 1.5},
            {"title": "ok", "price_per_minute": "5"},
            {"title": "ok", "price_per_minute": True},
            {"title": "ok", "status": "ready"},
            {"description": "no title"},
        ],
        ids=lambda body: ",".join(f"{k}={str(v)[:12]!r}" for k, v in body.items()),
    )
    async def test_invalid_videos_are_refused_with_a_validation_problem(self, catalog: CatalogDriver, body):
        response = await catalog.client.post("/videos", json=body, headers=catalog.creator().headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_error"

    async def test_the_bounds_themselves_are_accepted(self, catalog: CatalogDriver):
        video = await catalog.create_video(
            catalog.creator(),
            title="t" * 200,
            description="d" * 5000,
            tags=[f"tag{i}" for i in range(20)],
            price_per_minute=10_000,
        )
        assert len(video["title"]) == 200
        assert len(video["tags"]) == 20
        assert video["price_per_minute"] == 10_000


class TestWhoSeesAVideo:
    async def test_a_private_video_is_invisible_to_everyone_but_its_creator_and_admins(
        self, catalog: CatalogDriver
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner, visibility="private")
        path = f"/videos/{video['id']}"
        assert (await catalog.client.get(path)).status_code == 404
        stranger = await catalog.client.get(path, headers=catalog.creator().headers)
        assert stranger.status_code == 404
        assert stranger.json()["code"] == "video_not_found"
        assert (await catalog.client.get(path, headers=owner.headers)).status_code == 200
        assert (await catalog.client.get(path, headers=catalog.user("admin").headers)).status_code == 200

    async def test_an_unlisted_video_is_visible_to_anyone_with_its_id(self, catalog: CatalogDriver):
        video = await catalog.ready_video(visibility="unlisted")
        assert (await catalog.client.get(f"/videos/{video['id']}")).status_code == 200

    async def test_an_unknown_video_is_404(self, catalog: CatalogDriver):
        response = await catalog.client.get(f"/videos/{uuid.uuid4()}")
        assert response.status_code == 404
        assert response.json()["code"] == "video_not_found"


class TestEditingAVideo:
    async def test_the_creator_changes_only_the_fields_sent(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner, title="Before", description="keep me", tags=["a"])
        response = await catalog.client.patch(
            f"/videos/{video['id']}",
            json={
                "title": " After ",
                "tags": ["B", "b", "c"],
                "visibility": "private",
                "price_per_minute": 7,
            },
            headers=owner.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["title"], body["description"], body["tags"]) == ("After", "keep me", ["b", "c"])
        assert (body["visibility"], body["price_per_minute"]) == ("private", 7)
        assert body["updated_at"] >= video["updated_at"]

    @pytest.mark.parametrize(
        "body",
        [
            {"title": None},
            {"status": "ready"},
            {"creator_id": str(uuid.uuid4())},
            {"price_per_minute": 10_001},
        ],
        ids=["null-title", "status", "creator", "price"],
    )
    async def test_forbidden_or_invalid_changes_are_refused(self, catalog: CatalogDriver, body):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        response = await catalog.client.patch(f"/videos/{video['id']}", json=body, headers=owner.headers)
        assert response.status_code == 422

    async def test_others_get_403_on_a_public_video_and_404_on_a_private_one(self, catalog: CatalogDriver):
        owner, stranger = catalog.creator(), catalog.creator()
        public = await catalog.create_video(owner, visibility="public")
        private = await catalog.create_video(owner, visibility="private")
        for method in ("patch", "delete"):
            body = {"title": "hijacked"} if method == "patch" else None
            on_public = await catalog.client.request(
                method, f"/videos/{public['id']}", headers=stranger.headers, json=body
            )
            on_private = await catalog.client.request(
                method, f"/videos/{private['id']}", headers=stranger.headers, json=body
            )
            assert (on_public.status_code, on_public.json()["code"]) == (403, "not_owner")
            assert (on_private.status_code, on_private.json()["code"]) == (404, "video_not_found")
        assert (await catalog.get_video(public["id"]))["title"] == public["title"]

    async def test_an_admin_may_edit_and_delete_any_video(self, catalog: CatalogDriver):
        admin = catalog.user("admin")
        video = await catalog.create_video(catalog.creator(), visibility="private")
        response = await catalog.client.patch(
            f"/videos/{video['id']}", json={"title": "Moderated"}, headers=admin.headers
        )
        assert response.json()["title"] == "Moderated"
        deleted = await catalog.client.delete(f"/videos/{video['id']}", headers=admin.headers)
        assert deleted.status_code == 204


class TestDeletingAVideo:
    async def test_deleting_removes_the_video_its_files_and_nothing_else(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.ready_video(owner)
        other = await catalog.ready_video(owner)
        storage = catalog.storage
        for vid in (video["id"], other["id"]):
            await storage.put(f"videos/{vid}/master.m3u8", b"#EXTM3U\n")
            await storage.put(f"videos/{vid}/720p/segment_000.ts", b"ts")
            await storage.put(f"thumbnails/{vid}.jpg", b"jpeg")
            await storage.put(f"uploads/{vid}/source", b"mp4")
        commenter = catalog.user()
        await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": "nice"}, headers=commenter.headers
        )
        await catalog.client.put(
            f"/videos/{video['id']}/reaction", json={"kind": "like"}, headers=commenter.headers
        )

        response = await catalog.client.delete(f"/videos/{video['id']}", headers=owner.headers)

        assert response.status_code == 204
        assert (await catalog.client.get(f"/videos/{video['id']}", headers=owner.headers)).status_code == 404
        assert [info.key async for info in storage.list(f"videos/{video['id']}/")] == []
        assert not await storage.exists(f"thumbnails/{video['id']}.jpg")
        assert not await storage.exists(f"uploads/{video['id']}/source")
        assert await storage.exists(f"videos/{other['id']}/720p/segment_000.ts")
        assert await storage.exists(f"thumbnails/{other['id']}.jpg")
        assert await catalog.scalar("SELECT count(*) FROM comments WHERE video_id = :v", v=video["id"]) == 0
        reactions = "SELECT count(*) FROM video_reactions WHERE video_id = :v"
        assert await catalog.scalar(reactions, v=video["id"]) == 0

    async def test_deleting_twice_is_404_the_second_time(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        assert (
            await catalog.client.delete(f"/videos/{video['id']}", headers=owner.headers)
        ).status_code == 204
        assert (
            await catalog.client.delete(f"/videos/{video['id']}", headers=owner.headers)
        ).status_code == 404


class TestThumbnails:
    async def test_a_ready_video_with_a_thumbnail_serves_it(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        await catalog.upload_done(video["id"])
        jpeg = b"\xff\xd8\xff\xe0fake-jpeg"
        await catalog.storage.put(f"thumbnails/{video['id']}.jpg", jpeg, content_type="image/jpeg")
        result = await catalog.report_result(video["id"], thumbnail_key=f"thumbnails/{video['id']}.jpg")
        assert result.status_code == 200, result.text

        shown = await catalog.get_video(video["id"])
        assert shown["thumbnail_url"] == f"/api/v1/videos/{video['id']}/thumbnail"
        response = await catalog.client.get(f"/videos/{video['id']}/thumbnail")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == jpeg

    async def test_no_thumbnail_means_a_null_url_and_404(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        assert video["thumbnail_url"] is None
        response = await catalog.client.get(f"/videos/{video['id']}/thumbnail")
        assert (response.status_code, response.json()["code"]) == (404, "thumbnail_not_found")

    async def test_a_private_videos_thumbnail_is_hidden_from_strangers(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator(), visibility="private")
        response = await catalog.client.get(f"/videos/{video['id']}/thumbnail")
        assert response.status_code == 404
        assert response.json()["code"] == "video_not_found"
