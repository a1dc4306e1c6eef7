"""Comments with one level of replies: posting, listing, editing, deleting, and exact counts."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from tests.catalog.conftest import CatalogDriver, User


async def comment(
    catalog: CatalogDriver, video_id: str, user: User, body: str, parent: str | None = None
) -> Any:
    payload: dict[str, Any] = {"body": body}
    if parent:
        payload["parent_id"] = parent
    response = await catalog.client.post(f"/videos/{video_id}/comments", json=payload, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def comment_count(catalog: CatalogDriver, video_id: str) -> int:
    return int((await catalog.get_video(video_id))["counters"]["comments"])


class TestThreads:
    async def test_top_level_comments_list_newest_first_with_their_reply_counts(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        alice, bob = catalog.user(), catalog.user()
        first = await comment(catalog, video["id"], alice, "First!")
        second = await comment(catalog, video["id"], bob, "  Second, with a trailing space  ")
        await comment(catalog, video["id"], bob, "Reply one", parent=first["id"])
        await comment(catalog, video["id"], alice, "Reply two", parent=first["id"])

        top = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()
        assert [(c["id"], c["reply_count"]) for c in top["items"]] == [(second["id"], 0), (first["id"], 2)]
        assert top["items"][0]["body"] == "Second, with a trailing space"
        assert top["items"][1]["author_id"] == str(alice.id)

        replies = await catalog.client.get(
            f"/videos/{video['id']}/comments", params={"parent_id": first["id"]}
        )
        assert [c["body"] for c in replies.json()["items"]] == ["Reply one", "Reply two"]
        assert await comment_count(catalog, video["id"]) == 4

    async def test_each_comment_shows_its_authors_name_as_it_was_when_written(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        author_id = uuid.uuid4()
        before = catalog.minter.token(author_id, "viewer", name="Ada")
        after = catalog.minter.token(author_id, "viewer", name="Ada Lovelace")  # renamed since
        nameless = catalog.user(name=None)  # a token issued before names were in tokens
        for token, body in ((before, "first"), (after, "second")):
            posted = await catalog.client.post(
                f"/videos/{video['id']}/comments",
                json={"body": body},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert posted.status_code == 201, posted.text
        await comment(catalog, video["id"], nameless, "third")

        listed = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()["items"]
        assert [(c["body"], c["author_id"], c["author_name"]) for c in listed] == [
            ("third", str(nameless.id), None),
            ("second", str(author_id), "Ada Lovelace"),
            ("first", str(author_id), "Ada"),
        ]

    async def test_a_reply_to_a_reply_is_refused(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        user = catalog.user()
        top = await comment(catalog, video["id"], user, "top")
        reply = await comment(catalog, video["id"], user, "reply", parent=top["id"])
        response = await catalog.client.post(
            f"/videos/{video['id']}/comments",
            json={"body": "too deep", "parent_id": reply["id"]},
            headers=user.headers,
        )
        assert (response.status_code, response.json()["code"]) == (422, "reply_depth")
        assert await comment_count(catalog, video["id"]) == 2

    async def test_replying_to_a_comment_of_another_video_is_refused(self, catalog: CatalogDriver):
        video, other = await catalog.ready_video(), await catalog.ready_video()
        user = catalog.user()
        elsewhere = await comment(catalog, other["id"], user, "elsewhere")
        for parent in (elsewhere["id"], str(uuid.uuid4())):
            response = await catalog.client.post(
                f"/videos/{video['id']}/comments",
                json={"body": "x", "parent_id": parent},
                headers=user.headers,
            )
            assert (response.status_code, response.json()["code"]) == (422, "parent_not_found")

    async def test_comments_page_by_cursor(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        user = catalog.user()
        bodies = [f"comment {i}" for i in range(5)]
        for body in bodies:
            await comment(catalog, video["id"], user, body)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await catalog.client.get(f"/videos/{video['id']}/comments", params=params)).json()
            seen += [c["body"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(bodies))

    @pytest.mark.parametrize(
        "body", ["", "   ", "x" * 2001, "bell\u0007"], ids=["empty", "blank", "long", "ctrl"]
    )
    async def test_bad_bodies_are_422(self, catalog: CatalogDriver, body):
        video = await catalog.ready_video()
        response = await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": body}, headers=catalog.user().headers
        )
        assert response.status_code == 422

    async def test_comments_need_a_ready_video_the_user_may_see(self, catalog: CatalogDriver):
        owner, user = catalog.creator(), catalog.user()
        waiting = await catalog.create_video(owner)
        private = await catalog.ready_video(owner, visibility="private")
        not_ready = await catalog.client.post(
            f"/videos/{waiting['id']}/comments", json={"body": "hi"}, headers=user.headers
        )
        hidden = await catalog.client.post(
            f"/videos/{private['id']}/comments", json={"body": "hi"}, headers=user.headers
        )
        listing = await catalog.client.get(f"/videos/{private['id']}/comments", headers=user.headers)
        anonymous = await catalog.client.post(f"/videos/{waiting['id']}/comments", json={"body": "hi"})
        assert (not_ready.status_code, not_ready.json()["code"]) == (409, "video_not_ready")
        assert (hidden.status_code, hidden.json()["code"]) == (404, "video_not_found")
        assert listing.status_code == 404
        assert anonymous.status_code == 401


class TestEditingAndDeleting:
    async def test_the_author_edits_their_comment(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        author = catalog.user()
        posted = await comment(catalog, video["id"], author, "tpyo")
        assert posted["edited_at"] is None
        response = await catalog.client.patch(
            f"/videos/{video['id']}/comments/{posted['id']}", json={"body": "typo"}, headers=author.headers
        )
        assert response.status_code == 200
        assert response.json()["body"] == "typo"
        assert response.json()["edited_at"] is not None

    @pytest.mark.parametrize("role", ["viewer", "admin"])
    async def test_nobody_else_edits_it(self, catalog: CatalogDriver, role):
        video = await catalog.ready_video()
        posted = await comment(catalog, video["id"], catalog.user(), "mine")
        response = await catalog.client.patch(
            f"/videos/{video['id']}/comments/{posted['id']}",
            json={"body": "yours"},
            headers=catalog.user(role).headers,
        )
        assert (response.status_code, response.json()["code"]) == (403, "not_author")

    async def test_deleting_a_comment_takes_its_replies_and_keeps_counts_exact(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        author, other = catalog.user(), catalog.user()
        top = await comment(catalog, video["id"], author, "top")
        reply = await comment(catalog, video["id"], other, "reply", parent=top["id"])
        await comment(catalog, video["id"], other, "reply 2", parent=top["id"])
        keep = await comment(catalog, video["id"], other, "unrelated")
        assert await comment_count(catalog, video["id"]) == 4

        refused = await catalog.client.delete(
            f"/videos/{video['id']}/comments/{top['id']}", headers=other.headers
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "not_author")

        deleted_reply = await catalog.client.delete(
            f"/videos/{video['id']}/comments/{reply['id']}", headers=other.headers
        )
        assert deleted_reply.status_code == 204
        top_after = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()["items"]
        assert {c["id"]: c["reply_count"] for c in top_after}[top["id"]] == 1
        assert await comment_count(catalog, video["id"]) == 3

        deleted = await catalog.client.delete(
            f"/videos/{video['id']}/comments/{top['id']}", headers=author.headers
        )
        assert deleted.status_code == 204
        remaining = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()["items"]
        assert [c["id"] for c in remaining] == [keep["id"]]
        assert await comment_count(catalog, video["id"]) == 1
        gone = await catalog.client.delete(
            f"/videos/{video['id']}/comments/{top['id']}", headers=author.headers
        )
        assert (gone.status_code, gone.json()["code"]) == (404, "comment_not_found")

    async def test_an_admin_may_delete_any_comment(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        posted = await comment(catalog, video["id"], catalog.user(), "spam")
        response = await catalog.client.delete(
            f"/videos/{video['id']}/comments/{posted['id']}", headers=catalog.user("admin").headers
        )
        assert response.status_code == 204
        assert await comment_count(catalog, video["id"]) == 0


class TestConcurrentCommenting:
    async def test_the_comment_count_stays_exact_under_concurrent_posts_and_deletes(
        self, catalog: CatalogDriver
    ):
        video = await catalog.ready_video()
        vid = video["id"]
        users = [catalog.user() for _ in range(12)]
        seeds = [await comment(catalog, vid, user, f"seed {i}") for i, user in enumerate(users)]
        rng = random.Random(7)

        async def act(i: int, user: User) -> None:
            for step in range(3):
                choice = rng.random()
                if choice < 0.4:
                    await catalog.client.post(
                        f"/videos/{vid}/comments", json={"body": f"c{i}.{step}"}, headers=user.headers
                    )
                elif choice < 0.8:
                    parent = rng.choice(seeds)["id"]
                    await catalog.client.post(
                        f"/videos/{vid}/comments",
                        json={"body": "re", "parent_id": parent},
                        headers=user.headers,
                    )
                else:
                    await catalog.client.delete(
                        f"/videos/{vid}/comments/{seeds[i]['id']}", headers=user.headers
                    )

        async with asyncio.TaskGroup() as group:
            for i, user in enumerate(users):
                group.create_task(act(i, user))

        rows = await catalog.scalar("SELECT count(*) FROM comments WHERE video_id = :v", v=vid)
        assert await comment_count(catalog, vid) == rows
        mismatched = await catalog.scalar(
            "SELECT count(*) FROM comments p WHERE p.video_id = :v AND p.reply_count <> "
            "(SELECT count(*) FROM comments r WHERE r.parent_id = p.id)",
            v=vid,
        )
        assert mismatched == 0
