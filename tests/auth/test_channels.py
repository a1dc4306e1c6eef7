"""Channels and subscriptions: becoming a creator, public pages, subscribing, exact counters."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.auth.admin import create_admin
from services.auth.models import Channel, Subscription
from tests.auth.helpers import claims_of, creator, login, signed_in, unique_email


def channel_name() -> str:
    return f"Channel {uuid.uuid4().hex[:10]}"


class TestBecomingACreator:
    async def test_opening_a_channel_makes_a_viewer_a_creator(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client, display_name="Ada")
        name = channel_name()
        response = await auth_client.post(
            "/users/me/channel",
            json={"channel_name": f"  {name} ", "description": "Birds."},
            headers=account.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["role"] == "creator"
        assert body["token_refresh_required"] is True
        channel = body["channel"]
        assert channel["id"] == account.user_id == channel["owner_id"]
        assert (channel["channel_name"], channel["description"]) == (name, "Birds.")
        assert channel["owner_display_name"] == "Ada"
        assert channel["subscriber_count"] == 0
        me = (await auth_client.get("/users/me", headers=account.headers)).json()
        assert me["role"] == "creator"
        assert me["channel_id"] == account.user_id

    async def test_a_second_channel_is_refused(self, auth_client: httpx.AsyncClient):
        account, _ = await creator(auth_client)
        again = await auth_client.post(
            "/users/me/channel", json={"channel_name": channel_name()}, headers=account.headers
        )
        assert again.status_code == 409
        assert again.json()["code"] == "channel_exists"

    async def test_simultaneous_channel_requests_open_one_channel(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        responses = await asyncio.gather(
            *(
                auth_client.post(
                    "/users/me/channel", json={"channel_name": channel_name()}, headers=account.headers
                )
                for _ in range(4)
            )
        )
        assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]

    async def test_channel_names_are_unique_regardless_of_case_and_spacing(
        self, auth_client: httpx.AsyncClient
    ):
        first, _ = await creator(auth_client)
        taken = (await auth_client.get(f"/channels/{first.user_id}")).json()["channel_name"]
        other = await signed_in(auth_client)
        response = await auth_client.post(
            "/users/me/channel",
            json={"channel_name": "  " + taken.upper().replace(" ", "   ")},
            headers=other.headers,
        )
        assert response.status_code == 409
        assert response.json()["code"] == "channel_name_taken"

    async def test_an_admin_who_opens_a_channel_stays_admin(
        self, auth_client: httpx.AsyncClient, auth_database_url: str
    ):
        email = unique_email("admin")
        await create_admin(auth_database_url, email, "violet-Harbor-93-kayak", "Root")
        tokens = (await login(auth_client, email)).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        response = await auth_client.post(
            "/users/me/channel", json={"channel_name": channel_name()}, headers=headers
        )
        assert response.status_code == 201
        assert response.json()["role"] == "admin"
        assert response.json()["token_refresh_required"] is False
        assert claims_of(tokens["access_token"])["role"] == "admin"

    async def test_channel_input_is_validated(self, auth_client: httpx.AsyncClient):
        account = await signed_in(auth_client)
        for body in (
            {"channel_name": "ab"},
            {"channel_name": "x" * 51},
            {"channel_name": "ok name", "role": "admin"},
        ):
            response = await auth_client.post("/users/me/channel", json=body, headers=account.headers)
            assert response.status_code == 422, body


class TestPublicChannelPage:
    async def test_anyone_can_read_a_channel_page(self, auth_client: httpx.AsyncClient):
        owner, channel_id = await creator(auth_client, display_name="Grace")
        response = await auth_client.get(f"/channels/{channel_id}")
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {
            "id",
            "channel_name",
            "description",
            "owner_id",
            "owner_display_name",
            "subscriber_count",
            "created_at",
        }
        assert page["owner_display_name"] == "Grace"
        assert page["id"] == owner.user_id

    async def test_an_unknown_channel_is_a_404_problem(self, auth_client: httpx.AsyncClient):
        response = await auth_client.get(f"/channels/{uuid.uuid4()}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "channel_not_found"

    async def test_a_user_without_a_channel_has_no_channel_page(self, auth_client: httpx.AsyncClient):
        viewer = await signed_in(auth_client)
        assert (await auth_client.get(f"/channels/{viewer.user_id}")).status_code == 404

    async def test_a_malformed_id_is_a_422(self, auth_client: httpx.AsyncClient):
        response = await auth_client.get("/channels/not-a-uuid")
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


class TestSubscriptions:
    async def test_subscribing_and_unsubscribing_are_idempotent(self, auth_client: httpx.AsyncClient):
        _, channel_id = await creator(auth_client)
        fan = await signed_in(auth_client)
        url = f"/channels/{channel_id}/subscription"
        first = await auth_client.put(url, headers=fan.headers)
        second = await auth_client.put(url, headers=fan.headers)
        assert first.status_code == second.status_code == 200
        assert first.json()["subscriber_count"] == second.json()["subscriber_count"] == 1
        assert first.json()["subscribed_at"] == second.json()["subscribed_at"]
        assert (await auth_client.get(f"/channels/{channel_id}")).json()["subscriber_count"] == 1

        assert (await auth_client.delete(url, headers=fan.headers)).status_code == 204
        assert (await auth_client.delete(url, headers=fan.headers)).status_code == 204
        assert (await auth_client.get(f"/channels/{channel_id}")).json()["subscriber_count"] == 0

    async def test_nobody_subscribes_to_their_own_channel(self, auth_client: httpx.AsyncClient):
        owner, channel_id = await creator(auth_client)
        response = await auth_client.put(f"/channels/{channel_id}/subscription", headers=owner.headers)
        assert response.status_code == 422
        assert response.json()["code"] == "own_channel"

    async def test_subscribing_to_an_unknown_channel_is_404(self, auth_client: httpx.AsyncClient):
        fan = await signed_in(auth_client)
        for method in ("PUT", "DELETE"):
            response = await auth_client.request(
                method, f"/channels/{uuid.uuid4()}/subscription", headers=fan.headers
            )
            assert response.status_code == 404
            assert response.json()["code"] == "channel_not_found"

    async def test_subscribing_needs_a_sign_in(self, auth_client: httpx.AsyncClient):
        _, channel_id = await creator(auth_client)
        assert (await auth_client.put(f"/channels/{channel_id}/subscription")).status_code == 401

    async def test_the_list_pages_newest_first_with_an_opaque_cursor(self, auth_client: httpx.AsyncClient):
        channels = [(await creator(auth_client, display_name=f"C{n}"))[1] for n in range(5)]
        fan = await signed_in(auth_client)
        for channel_id in channels:
            assert (
                await auth_client.put(f"/channels/{channel_id}/subscription", headers=fan.headers)
            ).is_success

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            response = await auth_client.get("/users/me/subscriptions", params=params, headers=fan.headers)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 2
            seen += [item["channel"]["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(channels))
        first = (await auth_client.get("/users/me/subscriptions", headers=fan.headers)).json()["items"][0]
        assert first["channel"]["subscriber_count"] == 1
        assert first["subscribed_at"]

    async def test_a_forged_cursor_or_an_out_of_range_limit_is_refused(self, auth_client: httpx.AsyncClient):
        fan = await signed_in(auth_client)
        url = "/users/me/subscriptions"
        bad_cursor = await auth_client.get(url, params={"cursor": "bm90LWpzb24"}, headers=fan.headers)
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["code"] == "invalid_cursor"
        for limit in (0, 101):
            response = await auth_client.get(url, params={"limit": limit}, headers=fan.headers)
            assert response.status_code == 422
            assert response.json()["code"] == "validation_error"
        assert (await auth_client.get(url, params={"limit": 100}, headers=fan.headers)).status_code == 200


class TestSubscriberCountsUnderConcurrency:
    async def test_the_counter_equals_the_rows_after_a_storm_of_subscribes_and_unsubscribes(
        self, auth_client: httpx.AsyncClient, auth_sessions: async_sessionmaker[AsyncSession]
    ):
        _, channel_id = await creator(auth_client)
        fans = await asyncio.gather(*(signed_in(auth_client) for _ in range(12)))
        url = f"/channels/{channel_id}/subscription"
        rng = random.Random(7)
        # Every fan sends several PUT/DELETE at once, so the same (fan, channel) pair races itself too.
        requests = [(rng.choice(("PUT", "DELETE")), fan) for fan in fans for _ in range(4)]
        rng.shuffle(requests)
        responses = await asyncio.gather(
            *(auth_client.request(method, url, headers=fan.headers) for method, fan in requests)
        )
        assert len(responses) == 48
        assert all(response.status_code in (200, 204) for response in responses), [
            r.text for r in responses if r.status_code not in (200, 204)
        ]

        async with auth_sessions() as session:
            rows = (
                await session.execute(
                    select(func.count())
                    .select_from(Subscription)
                    .where(col(Subscription.channel_id) == uuid.UUID(channel_id))
                )
            ).scalar_one()
            counter = (
                await session.execute(
                    select(col(Channel.subscriber_count)).where(col(Channel.id) == uuid.UUID(channel_id))
                )
            ).scalar_one()
        assert counter == rows
        public = (await auth_client.get(f"/channels/{channel_id}")).json()["subscriber_count"]
        assert public == rows

        # Then everyone subscribes at once: the count is exactly the number of fans.
        await asyncio.gather(*(auth_client.put(url, headers=fan.headers) for fan in fans for _ in range(2)))
        assert (await auth_client.get(f"/channels/{channel_id}")).json()["subscriber_count"] == len(fans)
        await asyncio.gather(*(auth_client.delete(url, headers=fan.headers) for fan in fans))
        assert (await auth_client.get(f"/channels/{channel_id}")).json()["subscriber_count"] == 0
