"""Auth's events (docs/events.md): what sign-up, channels and subscriptions put on the event
stream after the real API calls, through auth's outbox."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text

from common.events import event_id
from common.outbox import OutboxRelay
from tests.auth.helpers import creator, register, signed_in, unique_email
from tests.common.eventstream import StreamWatch


async def relayed(app: FastAPI) -> None:
    """Everything auth committed so far is on the stream."""
    outbox: OutboxRelay = app.state.outbox
    await outbox.drain()


async def watching(app: FastAPI, redis: Redis) -> StreamWatch:
    """A watch of what comes after everything auth committed so far."""
    await relayed(app)
    return await StreamWatch(redis).mark()


class TestAccounts:
    async def test_registering_publishes_user_registered_with_the_role(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        watch = await watching(auth_app, redis)
        user_id = (await register(auth_client)).json()["id"]
        await relayed(auth_app)

        [event] = await watch.events("auth.user_registered", user_id=user_id)
        assert event.payload == {"user_id": user_id, "role": "viewer"}
        assert (event.producer, event.id) == ("auth", event_id("auth.user_registered", user_id))

    async def test_the_event_arrives_promptly_without_anyone_draining_the_outbox(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        watch = await watching(auth_app, redis)
        user_id = (await register(auth_client)).json()["id"]
        for _ in range(100):
            if await watch.events("auth.user_registered", user_id=user_id):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("user_registered did not reach the stream within 2 s")

    async def test_a_refused_registration_publishes_nothing(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        email = unique_email()
        assert (await register(auth_client, email=email)).status_code == 201
        watch = await watching(auth_app, redis)
        assert (await register(auth_client, email=email)).status_code == 409
        await relayed(auth_app)
        assert await watch.events("auth.user_registered") == []

    async def test_a_registration_committed_while_the_relay_was_down_is_sent_when_it_is_back(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        outbox: OutboxRelay = auth_app.state.outbox
        await outbox.aclose()  # as if the process died right after its commit
        try:
            watch = await watching(auth_app, redis)
            user_id = (await register(auth_client)).json()["id"]
            await asyncio.sleep(0.1)
            assert await watch.events("auth.user_registered", user_id=user_id) == []
            async with auth_app.state.engine.connect() as connection:
                waiting = await connection.execute(
                    text("SELECT count(*) FROM event_outbox WHERE id = :id"),
                    {"id": event_id("auth.user_registered", user_id)},
                )
                assert waiting.scalar_one() == 1
        finally:
            outbox.start()
        await outbox.drain()
        assert len(await watch.events("auth.user_registered", user_id=user_id)) == 1


class TestChannels:
    async def test_opening_a_channel_publishes_became_creator_with_its_handle(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        account = await signed_in(auth_client)
        watch = await watching(auth_app, redis)
        name = f"Birds {uuid.uuid4().hex[:8]}"
        response = await auth_client.post(
            "/users/me/channel", json={"channel_name": f"  {name} "}, headers=account.headers
        )
        assert response.status_code == 201
        await relayed(auth_app)

        [event] = await watch.events("auth.became_creator")
        assert event.payload == {"user_id": account.user_id, "channel_handle": name}

    async def test_a_refused_second_channel_publishes_nothing(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        account, _ = await creator(auth_client)
        watch = await watching(auth_app, redis)
        again = await auth_client.post(
            "/users/me/channel", json={"channel_name": f"Other {uuid.uuid4().hex}"}, headers=account.headers
        )
        assert again.status_code == 409
        await relayed(auth_app)
        assert await watch.events("auth.became_creator") == []


class TestSubscriptions:
    async def test_each_real_change_of_a_subscription_publishes_one_event(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        owner, channel_id = await creator(auth_client)
        fan = await signed_in(auth_client)
        url = f"/channels/{channel_id}/subscription"
        watch = await watching(auth_app, redis)

        # Repeating a PUT or a DELETE changes nothing and says nothing.
        for method in ("PUT", "PUT", "DELETE", "DELETE", "PUT"):
            response = await auth_client.request(method, url, headers=fan.headers)
            assert response.status_code in (200, 204), response.text
        await relayed(auth_app)

        events = await watch.events(subscriber_id=fan.user_id)
        assert [event.type for event in events] == ["auth.subscribed", "auth.unsubscribed", "auth.subscribed"]
        # A channel's id is its owner's user id: the creator subscribed to.
        assert all(e.payload == {"subscriber_id": fan.user_id, "creator_id": owner.user_id} for e in events)
        # Subscribing again later is a new fact, with an id of its own.
        assert len({event.id for event in events}) == 3

    async def test_refused_subscriptions_publish_nothing(
        self, auth_app: FastAPI, auth_client: httpx.AsyncClient, redis: Redis
    ) -> None:
        owner, channel_id = await creator(auth_client)
        watch = await watching(auth_app, redis)
        own = await auth_client.put(f"/channels/{channel_id}/subscription", headers=owner.headers)
        missing = await auth_client.put(f"/channels/{uuid.uuid4()}/subscription", headers=owner.headers)
        assert (own.status_code, missing.status_code) == (422, 404)
        await relayed(auth_app)
        assert await watch.events(subscriber_id=owner.user_id) == []
