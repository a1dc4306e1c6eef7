"""Billing's events (docs/events.md): each ledger function writes its movement's event into the
outbox in the same statement, so a movement is never committed without its event, a crash before
the relay ran loses nothing, and a replayed request writes no second event."""

from __future__ import annotations

import uuid

import orjson
from redis.asyncio import Redis

from common.events import Event, decode_event, event_id
from common.outbox import OutboxRelay
from tests.billing.conftest import BillingDriver, charge_body
from tests.common.eventstream import StreamWatch


def relay(billing: BillingDriver) -> OutboxRelay:
    outbox: OutboxRelay = billing.app.state.billing.outbox
    return outbox


async def watching(billing: BillingDriver, redis: Redis) -> StreamWatch:
    await relay(billing).drain()
    return await StreamWatch(redis).mark()


async def outbox_envelope(billing: BillingDriver, id_: uuid.UUID) -> str | None:
    envelope: str | None = await billing.pool.fetchval("SELECT envelope FROM event_outbox WHERE id = $1", id_)
    return envelope


class TestACrashCannotLoseACharge:
    async def test_a_charge_committed_while_no_relay_runs_is_published_when_one_is_back(
        self, billing: BillingDriver, redis: Redis
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 1000)
        watch = await watching(billing, redis)
        body = charge_body(viewer=viewer.id, creator=creator.id, amount=333)
        expected_id = event_id("billing.unit_charged", body["key"])

        await relay(billing).aclose()  # the process dies right after the ledger statement commits
        try:
            response = await billing.charge(body)
            assert response.status_code == 201
            # Committed with the charge, in the same statement, and nowhere else yet.
            envelope = await outbox_envelope(billing, expected_id)
            assert envelope is not None
            assert await watch.events("billing.unit_charged", key=body["key"]) == []
        finally:
            relay(billing).start()
        await relay(billing).drain()

        [raw] = [raw for raw in await watch.raw() if body["key"].encode() in raw]
        assert raw.decode() == envelope  # sent exactly as committed
        event = decode_event({b"event": raw})
        charge = response.json()
        created_at = await billing.pool.fetchval(
            "SELECT created_at FROM transactions WHERE id = $1", uuid.UUID(charge["transaction_id"])
        )
        assert (event.id, event.type, event.version, event.producer) == (
            expected_id,
            "billing.unit_charged",
            1,
            "billing",
        )
        assert event.occurred_at == created_at
        assert event.payload == {
            "transaction_id": charge["transaction_id"],
            "key": body["key"],
            "session_id": body["session_id"],
            "unit": 0,
            "viewer_id": str(viewer.id),
            "creator_id": str(creator.id),
            "video_id": body["video_id"],
            "amount": 333,
            "creator_share": 267,
            "platform_fee": 66,
            "currency": "USD",
        }
        assert await outbox_envelope(billing, expected_id) is None  # relayed, then removed

    async def test_a_refused_charge_writes_no_event_at_all(self, billing: BillingDriver):
        body = charge_body(viewer=uuid.uuid4(), amount=100)
        await relay(billing).aclose()
        try:
            assert (await billing.charge(body)).status_code == 402
            assert await outbox_envelope(billing, event_id("billing.unit_charged", body["key"])) is None
        finally:
            relay(billing).start()


class TestTopupAndRefundEvents:
    async def test_a_top_up_event_is_identified_by_its_ledger_key_and_a_replay_adds_none(
        self, billing: BillingDriver, redis: Redis
    ):
        user = billing.user()
        watch = await watching(billing, redis)
        first = await billing.topup(user, 500, key="wallet-1")
        again = await billing.topup(user, 500, key="wallet-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json()["transaction_id"] == first.json()["transaction_id"]

        events = await published(billing, watch, "billing.topup_succeeded", user_id=str(user.id))
        assert [event.id for event in events] == [
            event_id("billing.topup_succeeded", f"topup:{user.id}:wallet-1")
        ]
        assert events[0].payload == {
            "transaction_id": first.json()["transaction_id"],
            "user_id": str(user.id),
            "amount": 500,
            "balance": 500,
            "currency": "USD",
        }

    async def test_a_refund_event_describes_the_charge_it_reverses(
        self, billing: BillingDriver, redis: Redis
    ):
        viewer, creator, admin = billing.user(), billing.user("creator"), billing.user("admin")
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, creator=creator.id, amount=333)
        charge = (await billing.charge(body)).json()
        watch = await watching(billing, redis)

        refund = await billing.refund(admin, charge["transaction_id"], 100, key="r-1")
        replay = await billing.refund(admin, charge["transaction_id"], 100, key="r-1")
        assert (refund.status_code, replay.status_code) == (201, 201)
        assert replay.json()["transaction_id"] == refund.json()["transaction_id"]

        [event] = await published(billing, watch, "billing.refund_issued", refund_of=charge["transaction_id"])
        assert event.id == event_id("billing.refund_issued", f"refund:{admin.id}:r-1")
        assert event.payload == {
            "transaction_id": refund.json()["transaction_id"],
            "refund_of": charge["transaction_id"],
            "charge_key": body["key"],
            "viewer_id": str(viewer.id),
            "creator_id": str(creator.id),
            "video_id": body["video_id"],
            "amount": 100,
            # floor(100 * 66 / 333) of the fee back; the rest from the creator's share.
            "creator_part": 81,
            "platform_part": 19,
            "currency": "USD",
            "actor_id": str(admin.id),
        }

    async def test_sql_callers_that_give_no_event_id_still_record_the_event(self, billing: BillingDriver):
        user = uuid.uuid4()
        await relay(billing).aclose()
        try:
            await billing.pool.execute(
                "SELECT billing_topup($1, $2, $3, 250, 'USD', 'test_card', 'ref')",
                f"topup:{user}:by-hand",
                bytes(32),
                user,
            )
            envelope = await billing.pool.fetchval(
                "SELECT envelope FROM event_outbox WHERE type = 'billing.topup_succeeded'"
                " AND envelope::json -> 'payload' ->> 'user_id' = $1",
                str(user),
            )
        finally:
            relay(billing).start()
        assert orjson.loads(envelope)["payload"]["amount"] == 250


async def published(billing: BillingDriver, watch: StreamWatch, type_: str, **payload: str) -> list[Event]:
    await relay(billing).drain()
    return await watch.events(type_, **payload)
