"""Full-text search: relevance (title > tags > description), only public ready videos, paging."""

from __future__ import annotations

import pytest

from tests.catalog.conftest import CatalogDriver, unique_word


async def search(catalog: CatalogDriver, q: str, **params) -> list[str]:
    response = await catalog.client.get("/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]


class TestRelevance:
    async def test_a_title_match_ranks_above_tag_and_description_matches(self, catalog: CatalogDriver):
        word = unique_word()
        owner = catalog.creator()
        # Created weakest first, so neither recency nor id order could explain the result.
        await catalog.ready_video(
            owner, title="In the description", description=f"{word} again {word} and once more {word}."
        )
        await catalog.ready_video(owner, title="In the tags", tags=[word, "misc"])
        await catalog.ready_video(owner, title=f"The {word} in the title")
        assert await search(catalog, word) == [
            f"The {word} in the title",
            "In the tags",
            "In the description",
        ]

    async def test_words_match_their_other_forms(self, catalog: CatalogDriver):
        word = unique_word()
        await catalog.ready_video(title=f"Running {word} marathons")
        assert await search(catalog, f"{word} run marathon") == [f"Running {word} marathons"]

    async def test_web_search_syntax_excludes_words(self, catalog: CatalogDriver):
        word = unique_word()
        await catalog.ready_video(title=f"{word} with cats")
        await catalog.ready_video(title=f"{word} with dogs")
        assert await search(catalog, f"{word} -dogs") == [f"{word} with cats"]

    async def test_only_public_ready_videos_are_found(self, catalog: CatalogDriver):
        word = unique_word()
        owner = catalog.creator()
        await catalog.ready_video(owner, title=f"{word} public")
        await catalog.ready_video(owner, title=f"{word} unlisted", visibility="unlisted")
        await catalog.ready_video(owner, title=f"{word} private", visibility="private")
        await catalog.create_video(owner, title=f"{word} not uploaded")
        assert await search(catalog, word) == [f"{word} public"]

    async def test_an_edit_is_searchable_at_once(self, catalog: CatalogDriver):
        word = unique_word()
        owner = catalog.creator()
        video = await catalog.ready_video(owner, title="Plain title")
        assert await search(catalog, word) == []
        await catalog.client.patch(f"/videos/{video['id']}", json={"tags": [word]}, headers=owner.headers)
        assert await search(catalog, word) == ["Plain title"]


class TestSearchPaging:
    async def test_results_page_without_repeats(self, catalog: CatalogDriver):
        word = unique_word()
        owner = catalog.creator()
        titles = {f"{word} number {i}" for i in range(5)}
        for title in titles:
            await catalog.ready_video(owner, title=title)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"q": word, "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await catalog.client.get("/search", params=params)).json()
            seen += [item["title"] for item in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(titles)

    @pytest.mark.parametrize(
        "q", ["", "   ", "x" * 201, "tab\there"], ids=["empty", "blank", "long", "control"]
    )
    async def test_bad_queries_are_422(self, catalog: CatalogDriver, q):
        response = await catalog.client.get("/search", params={"q": q})
        assert response.status_code == 422

    async def test_a_query_of_only_stop_words_finds_nothing_rather_than_failing(self, catalog: CatalogDriver):
        assert await search(catalog, "the and of") == []
