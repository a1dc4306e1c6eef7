"""Likes and dislikes on videos and comments: one per user, counters exact under concurrency."""

from __future__ import annotations

import asyncio
import random

from tests.catalog.conftest import CatalogDriver, User


async def react(catalog: CatalogDriver, path: str, user: User, kind: str | None) -> dict:
    if kind is None:
        response = await catalog.client.delete(path, headers=user.headers)
    else:
        response = await catalog.client.put(path, json={"kind": kind}, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


class TestVideoReactions:
    async def test_like_switch_to_dislike_and_take_back(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        path = f"/videos/{video['id']}/reaction"
        alice, bob = catalog.user(), catalog.user()

        assert await react(catalog, path, alice, "like") == {"reaction": "like", "likes": 1, "dislikes": 0}
        assert await react(catalog, path, alice, "like") == {"reaction": "like", "likes": 1, "dislikes": 0}
        assert await react(catalog, path, bob, "like") == {"reaction": "like", "likes": 2, "dislikes": 0}
        assert await react(catalog, path, alice, "dislike") == {
            "reaction": "dislike",
            "likes": 1,
            "dislikes": 1,
        }
        assert (await catalog.get_video(video["id"], alice))["my_reaction"] == "dislike"
        assert (await catalog.get_video(video["id"], bob))["my_reaction"] == "like"
        assert await react(catalog, path, alice, None) == {"reaction": None, "likes": 1, "dislikes": 0}
        assert await react(catalog, path, alice, None) == {"reaction": None, "likes": 1, "dislikes": 0}
        shown = await catalog.get_video(video["id"], alice)
        assert shown["my_reaction"] is None
        assert (shown["counters"]["likes"], shown["counters"]["dislikes"]) == (1, 0)

    async def test_reactions_need_a_visible_ready_video_and_a_valid_kind(self, catalog: CatalogDriver):
        owner, user = catalog.creator(), catalog.user()
        private = await catalog.ready_video(owner, visibility="private")
        waiting = await catalog.create_video(owner)
        ready = await catalog.ready_video(owner)
        hidden = await catalog.client.put(
            f"/videos/{private['id']}/reaction", json={"kind": "like"}, headers=user.headers
        )
        early = await catalog.client.put(
            f"/videos/{waiting['id']}/reaction", json={"kind": "like"}, headers=user.headers
        )
        bad = await catalog.client.put(
            f"/videos/{ready['id']}/reaction", json={"kind": "love"}, headers=user.headers
        )
        anonymous = await catalog.client.put(f"/videos/{ready['id']}/reaction", json={"kind": "like"})
        assert (hidden.status_code, hidden.json()["code"]) == (404, "video_not_found")
        assert (early.status_code, early.json()["code"]) == (409, "video_not_ready")
        assert bad.status_code == 422
        assert anonymous.status_code == 401


class TestCommentReactions:
    async def test_comments_are_liked_and_disliked_like_videos(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        author, fan = catalog.user(), catalog.user()
        posted = await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": "hello"}, headers=author.headers
        )
        path = f"/videos/{video['id']}/comments/{posted.json()['id']}/reaction"
        assert await react(catalog, path, fan, "like") == {"reaction": "like", "likes": 1, "dislikes": 0}
        assert await react(catalog, path, fan, "dislike") == {
            "reaction": "dislike",
            "likes": 0,
            "dislikes": 1,
        }
        listed = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()["items"][0]
        assert (listed["likes"], listed["dislikes"]) == (0, 1)
        assert await react(catalog, path, fan, None) == {"reaction": None, "likes": 0, "dislikes": 0}

    async def test_an_unknown_comment_is_404(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        other = await catalog.ready_video()
        posted = await catalog.client.post(
            f"/videos/{other['id']}/comments", json={"body": "there"}, headers=catalog.user().headers
        )
        response = await catalog.client.put(
            f"/videos/{video['id']}/comments/{posted.json()['id']}/reaction",
            json={"kind": "like"},
            headers=catalog.user().headers,
        )
        assert (response.status_code, response.json()["code"]) == (404, "comment_not_found")


class TestCountersUnderConcurrency:
    async def test_thirty_users_reacting_switching_and_removing_at_once_keep_exact_counters(
        self, catalog: CatalogDriver
    ):
        video = await catalog.ready_video()
        posted = await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": "react to me"}, headers=catalog.user().headers
        )
        comment_id = posted.json()["id"]
        video_path = f"/videos/{video['id']}/reaction"
        comment_path = f"/videos/{video['id']}/comments/{comment_id}/reaction"
        users = [catalog.user() for _ in range(30)]
        rng = random.Random(42)
        plans = [[rng.choice(["like", "dislike", None]) for _ in range(4)] for _ in users]

        async def act(user: User, plan: list[str | None]) -> None:
            for kind in plan:
                async with asyncio.TaskGroup() as both:
                    both.create_task(react(catalog, video_path, user, kind))
                    both.create_task(react(catalog, comment_path, user, kind))

        # The same user also fires conflicting requests at once: still one reaction, still exact.
        spammer = users[0]
        async with asyncio.TaskGroup() as everyone:
            for user, plan in zip(users, plans, strict=True):
                everyone.create_task(act(user, plan))
            for kind in ["like", "dislike"] * 5:
                everyone.create_task(react(catalog, video_path, spammer, kind))

        counts = await catalog.get_video(video["id"])
        for kind, counter in (("like", "likes"), ("dislike", "dislikes")):
            rows = await catalog.scalar(
                "SELECT count(*) FROM video_reactions WHERE video_id = :v AND kind = :k",
                v=video["id"],
                k=kind,
            )
            assert counts["counters"][counter] == rows, kind
        comment_row = (await catalog.client.get(f"/videos/{video['id']}/comments")).json()["items"][0]
        for kind, counter in (("like", "likes"), ("dislike", "dislikes")):
            rows = await catalog.scalar(
                "SELECT count(*) FROM comment_reactions WHERE comment_id = :c AND kind = :k",
                c=comment_id,
                k=kind,
            )
            assert comment_row[counter] == rows, kind
        # And what the users last asked for is what is stored (each user's requests were sequential).
        for user, plan in zip(users[1:], plans[1:], strict=True):
            stored = await catalog.scalar(
                "SELECT kind FROM video_reactions WHERE video_id = :v AND user_id = :u",
                v=video["id"],
                u=user.id,
            )
            assert stored == plan[-1]
