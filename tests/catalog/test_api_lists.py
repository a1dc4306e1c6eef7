"""Public lists, channel lists and the creator's studio: what appears, in which order, page by page."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.catalog.conftest import CatalogDriver, User, unique_word


async def all_pages(
    catalog: CatalogDriver, path: str, *, user: User | None = None, **params: Any
) -> list[list[str]]:
    """Every page of a list (ids per page), following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor = None
    headers = user.headers if user else {}
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await catalog.client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


class TestPublicLists:
    async def test_only_public_ready_videos_are_listed(self, catalog: CatalogDriver):
        word = unique_word()
        owner = catalog.creator()
        public = await catalog.ready_video(owner, title=f"{word} public")
        await catalog.ready_video(owner, title=f"{word} unlisted", visibility="unlisted")
        await catalog.ready_video(owner, title=f"{word} private", visibility="private")
        await catalog.create_video(owner, title=f"{word} still uploading")
        processing = await catalog.create_video(owner, title=f"{word} processing")
        await catalog.upload_done(processing["id"])

        listed = await all_pages(catalog, "/videos", q=word)
        channel = await all_pages(catalog, "/videos", creator=str(owner.id))
        owner_view = await all_pages(catalog, "/videos", user=owner, creator=str(owner.id))

        assert listed == [[public["id"]]]
        assert channel == [[public["id"]]]
        assert owner_view == [[public["id"]]]

    async def test_a_video_made_private_leaves_the_lists(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.ready_video(owner)
        assert await all_pages(catalog, "/videos", creator=str(owner.id)) == [[video["id"]]]
        await catalog.client.patch(
            f"/videos/{video['id']}", json={"visibility": "private"}, headers=owner.headers
        )
        assert await all_pages(catalog, "/videos", creator=str(owner.id)) == [[]]

    async def test_newest_first_page_by_page_without_repeats_or_gaps(self, catalog: CatalogDriver):
        owner = catalog.creator()
        ids = [(await catalog.ready_video(owner))["id"] for _ in range(5)]
        pages = await all_pages(catalog, "/videos", creator=str(owner.id), limit=2)
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [vid for page in pages for vid in page] == list(reversed(ids))

    async def test_equal_sort_keys_still_page_stably(self, catalog: CatalogDriver):
        owner = catalog.creator()
        ids = [(await catalog.ready_video(owner))["id"] for _ in range(5)]
        # Same publication instant for all: only the id tie-break orders them.
        async with catalog.sessions() as session, session.begin():
            from sqlalchemy import text

            await session.execute(
                text("UPDATE videos SET published_at = '2026-01-01T00:00:00Z' WHERE creator_id = :c"),
                {"c": owner.id},
            )
        for sort in ("newest", "most_viewed"):
            pages = await all_pages(catalog, "/videos", creator=str(owner.id), sort=sort, limit=2)
            flat = [vid for page in pages for vid in page]
            assert flat == sorted(ids, reverse=True), sort

    async def test_most_viewed_first(self, catalog: CatalogDriver):
        owner = catalog.creator()
        videos = [await catalog.ready_video(owner) for _ in range(3)]
        for video, views in zip(videos, (5, 50, 20), strict=True):
            response = await catalog.client.post(
                f"/internal/videos/{video['id']}/views",
                json={"count": views},
                headers=catalog.internal_headers("streaming"),
            )
            assert response.status_code == 200
        pages = await all_pages(catalog, "/videos", creator=str(owner.id), sort="most_viewed", limit=2)
        assert [vid for page in pages for vid in page] == [videos[1]["id"], videos[2]["id"], videos[0]["id"]]
        shown = await catalog.get_video(videos[1]["id"])
        assert shown["counters"]["views"] == 50

    async def test_the_text_filter_combines_with_the_channel(self, catalog: CatalogDriver):
        word = unique_word()
        owner, other = catalog.creator(), catalog.creator()
        mine = await catalog.ready_video(owner, title=f"About {word}")
        await catalog.ready_video(owner, title="Something else")
        await catalog.ready_video(other, title=f"Also about {word}")
        assert await all_pages(catalog, "/videos", creator=str(owner.id), q=word) == [[mine["id"]]]


class TestStudio:
    async def test_the_creator_sees_all_their_videos_whatever_their_status(self, catalog: CatalogDriver):
        owner = catalog.creator()
        created = [
            (await catalog.create_video(owner, visibility="private"))["id"],
            (await catalog.ready_video(owner, visibility="unlisted"))["id"],
            (await catalog.ready_video(owner))["id"],
        ]
        await catalog.ready_video(catalog.creator())  # someone else's
        pages = await all_pages(catalog, "/videos", user=owner, creator="me", limit=2)
        assert [vid for page in pages for vid in page] == list(reversed(created))

    async def test_the_studio_needs_a_signed_in_user(self, catalog: CatalogDriver):
        response = await catalog.client.get("/videos", params={"creator": "me"})
        assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")


class TestBadListRequests:
    @pytest.mark.parametrize(
        "params",
        [
            {"limit": 0},
            {"limit": 101},
            {"sort": "oldest"},
            {"creator": "not-a-uuid"},
            {"q": ""},
            {"q": "x" * 201},
        ],
        ids=["limit-0", "limit-101", "sort", "creator", "empty-q", "long-q"],
    )
    async def test_invalid_parameters_are_422(self, catalog: CatalogDriver, params):
        response = await catalog.client.get("/videos", params=params)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage!",
            base64.urlsafe_b64encode(b'{"o":"views","v":3,"id":"x"}').decode().rstrip("="),
            base64.urlsafe_b64encode(json.dumps({"o": "rank", "v": 1.0, "id": "0" * 32}).encode()).decode(),
        ],
        ids=["not-base64-json", "bad-id", "other-ordering"],
    )
    async def test_a_forged_or_foreign_cursor_is_refused(self, catalog: CatalogDriver, cursor):
        response = await catalog.client.get("/videos", params={"cursor": cursor})
        assert (response.status_code, response.json()["code"]) == (422, "invalid_cursor")
