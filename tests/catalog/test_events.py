"""Catalog's events (docs/events.md): what a video's life, comments and reactions put on the event
stream after the real API calls, through catalog's outbox."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from common.events import Event, event_id
from common.outbox import OutboxRelay
from tests.catalog.conftest import CatalogDriver
from tests.common.eventstream import StreamWatch


async def relayed(catalog: CatalogDriver) -> None:
    """Everything catalog committed so far is on the stream."""
    outbox: OutboxRelay = catalog.app.state.outbox
    await outbox.drain()


async def watching(catalog: CatalogDriver, redis: Redis) -> StreamWatch:
    await relayed(catalog)
    return await StreamWatch(redis).mark()


async def published(catalog: CatalogDriver, watch: StreamWatch, type_: str, **payload: Any) -> list[Event]:
    await relayed(catalog)
    return await watch.events(type_, **payload)


class TestVideoLife:
    async def test_creating_a_video_publishes_video_created(self, catalog: CatalogDriver, redis: Redis):
        owner = catalog.creator()
        watch = await watching(catalog, redis)
        video = await catalog.create_video(owner, title="Kestrels", price_per_minute=12)

        [event] = await published(catalog, watch, "catalog.video_created", video_id=video["id"])
        assert event.payload == {
            "video_id": video["id"],
            "creator_id": str(owner.id),
            "title": "Kestrels",
            "price_per_minute": 12,
            "currency": "USD",
        }
        assert (event.producer, event.id) == ("catalog", event_id("catalog.video_created", video["id"]))

    async def test_a_viewer_cannot_create_a_video_and_nothing_is_published(
        self, catalog: CatalogDriver, redis: Redis
    ):
        watch = await watching(catalog, redis)
        viewer = catalog.user()
        response = await catalog.client.post("/videos", json={"title": "No"}, headers=viewer.headers)
        assert response.status_code == 403
        assert await published(catalog, watch, "catalog.video_created", creator_id=str(viewer.id)) == []

    async def test_a_transcoded_video_publishes_video_ready_once_with_its_rendition_names(
        self, catalog: CatalogDriver, redis: Redis
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        await catalog.upload_done(video["id"])
        watch = await watching(catalog, redis)

        assert (await catalog.report_result(video["id"])).status_code == 200
        assert (await catalog.report_result(video["id"])).status_code == 200  # the same result again

        [event] = await published(catalog, watch, "catalog.video_ready", video_id=video["id"])
        assert event.payload == {
            "video_id": video["id"],
            "creator_id": str(owner.id),
            "duration_s": 61.5,
            "renditions": ["360p", "720p"],
        }

    async def test_a_failed_transcode_publishes_video_failed_with_the_reason(
        self, catalog: CatalogDriver, redis: Redis
    ):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        await catalog.upload_done(video["id"])
        watch = await watching(catalog, redis)

        response = await catalog.report_result(
            video["id"], status="failed", failure_reason="No video stream.", duration_s=None, renditions=[]
        )
        assert response.status_code == 200, response.text

        assert [
            e.payload for e in await published(catalog, watch, "catalog.video_failed", video_id=video["id"])
        ] == [{"video_id": video["id"], "creator_id": str(owner.id), "reason": "No video stream."}]
        assert await watch.events("catalog.video_ready", video_id=video["id"]) == []

    async def test_deleting_a_video_publishes_video_deleted(self, catalog: CatalogDriver, redis: Redis):
        owner = catalog.creator()
        video = await catalog.ready_video(owner)
        watch = await watching(catalog, redis)

        deleted = await catalog.client.delete(f"/videos/{video['id']}", headers=owner.headers)
        again = await catalog.client.delete(f"/videos/{video['id']}", headers=owner.headers)
        assert (deleted.status_code, again.status_code) == (204, 404)

        assert [
            e.payload for e in await published(catalog, watch, "catalog.video_deleted", video_id=video["id"])
        ] == [{"video_id": video["id"], "creator_id": str(owner.id)}]


class TestComments:
    async def test_a_comment_publishes_comment_created_naming_the_video_creator(
        self, catalog: CatalogDriver, redis: Redis
    ):
        owner, author = catalog.creator(), catalog.user()
        video = await catalog.ready_video(owner)
        watch = await watching(catalog, redis)

        response = await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": "Lovely."}, headers=author.headers
        )
        assert response.status_code == 201, response.text

        [event] = await published(catalog, watch, "catalog.comment_created", video_id=video["id"])
        assert event.payload == {
            "video_id": video["id"],
            "creator_id": str(owner.id),
            "comment_id": response.json()["id"],
            "author_id": str(author.id),
        }


class TestReactions:
    async def test_each_change_of_a_reaction_is_published_and_repeats_are_not(
        self, catalog: CatalogDriver, redis: Redis
    ):
        owner, fan = catalog.creator(), catalog.user()
        video = await catalog.ready_video(owner)
        path = f"/videos/{video['id']}/reaction"
        watch = await watching(catalog, redis)

        for kind in ("like", "like", "dislike", None, None):
            if kind is None:
                response = await catalog.client.delete(path, headers=fan.headers)
            else:
                response = await catalog.client.put(path, json={"kind": kind}, headers=fan.headers)
            assert response.status_code == 200, response.text

        events = await published(catalog, watch, "catalog.reaction_set", video_id=video["id"])
        assert [event.payload["reaction"] for event in events] == ["like", "dislike", None]
        assert all(
            event.payload.keys() == {"video_id", "creator_id", "user_id", "reaction"}
            and (event.payload["creator_id"], event.payload["user_id"]) == (str(owner.id), str(fan.id))
            for event in events
        )
        assert len({event.id for event in events}) == 3

    async def test_reactions_to_comments_are_not_video_reactions(self, catalog: CatalogDriver, redis: Redis):
        video = await catalog.ready_video()
        fan = catalog.user()
        comment = await catalog.client.post(
            f"/videos/{video['id']}/comments", json={"body": "Hm."}, headers=fan.headers
        )
        watch = await watching(catalog, redis)
        response = await catalog.client.put(
            f"/videos/{video['id']}/comments/{comment.json()['id']}/reaction",
            json={"kind": "like"},
            headers=fan.headers,
        )
        assert response.status_code == 200, response.text
        assert await published(catalog, watch, "catalog.reaction_set", video_id=video["id"]) == []
