"""Admin refunds: all or part of a charge as a reversing transaction, never more than is left,
with the fee given back by the documented rounding; and what creators earn."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.billing.conftest import BillingDriver, charge_body
from tests.identities import User


async def charged(
    billing: BillingDriver, amount: int, *, viewer: User | None = None, creator: User | None = None
) -> tuple[User, User, dict[str, Any]]:
    viewer = viewer or billing.user()
    creator = creator or billing.user("creator")
    await billing.fund(viewer, 1000)
    response = await billing.charge(charge_body(viewer=viewer.id, creator=creator.id, amount=amount))
    assert response.status_code == 201, response.text
    return viewer, creator, response.json()


class TestRefunds:
    async def test_a_full_refund_reverses_all_three_entries(self, billing: BillingDriver):
        viewer, creator, charge = await charged(billing, 333)
        platform_before = await billing.platform_revenue()

        response = await billing.refund(billing.user("admin"), charge["transaction_id"])

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["amount"], body["creator_part"], body["platform_part"], body["balance"]) == (
            333,
            267,
            66,
            1000,
        )
        assert body["refund_of"] == charge["transaction_id"]
        assert await billing.balance(viewer) == 1000
        assert (await billing.earnings(creator))["total"] == 0
        assert await billing.platform_revenue() - platform_before == -66
        statement = (await billing.client.get("/wallet/transactions", headers=viewer.headers)).json()
        assert [(i["kind"], i["amount"], i["refund_of"]) for i in statement["items"][:1]] == [
            ("refund", 333, charge["transaction_id"])
        ]

    async def test_partial_refunds_add_up_to_the_charge_exactly_and_no_further(self, billing: BillingDriver):
        viewer, _, charge = await charged(billing, 333)
        admin = billing.user("admin")
        parts = []
        for amount in (100, 100, 100, 33):
            response = await billing.refund(admin, charge["transaction_id"], amount)
            assert response.status_code == 201, response.text
            parts.append((response.json()["creator_part"], response.json()["platform_part"]))
        assert sum(p for _, p in parts) == 66
        assert sum(c for c, _ in parts) == 267

        more = await billing.refund(admin, charge["transaction_id"], 1)
        assert (more.status_code, more.json()["code"], more.json()["refundable"]) == (
            409,
            "refund_exceeds_charge",
            0,
        )
        assert await billing.balance(viewer) == 1000
        assert (await billing.verify()).ok

    async def test_a_refund_larger_than_what_is_left_is_refused_with_what_is_left(
        self, billing: BillingDriver
    ):
        _, _, charge = await charged(billing, 200)
        admin = billing.user("admin")
        await billing.refund(admin, charge["transaction_id"], 150)
        response = await billing.refund(admin, charge["transaction_id"], 51)
        assert (response.status_code, response.json()["refundable"]) == (409, 50)
        rest = await billing.refund(admin, charge["transaction_id"])
        assert (rest.status_code, rest.json()["amount"]) == (201, 50)

    async def test_only_charges_can_be_refunded(self, billing: BillingDriver):
        admin, user = billing.user("admin"), billing.user()
        topup = (await billing.topup(user, 500)).json()
        for transaction_id in (topup["transaction_id"], str(uuid.uuid4())):
            response = await billing.refund(admin, transaction_id)
            assert (response.status_code, response.json()["code"]) == (404, "charge_not_found")

    @pytest.mark.parametrize("role", ["viewer", "creator"])
    async def test_only_admins_refund(self, billing: BillingDriver, role):
        viewer, _, charge = await charged(billing, 200)
        response = await billing.refund(billing.user(role), charge["transaction_id"])
        assert (response.status_code, response.json()["code"]) == (403, "insufficient_role")
        own = await billing.refund(viewer, charge["transaction_id"])
        assert own.status_code == 403
        assert await billing.balance(viewer) == 800

    async def test_a_refund_publishes_refund_issued(self, billing: BillingDriver):
        viewer, creator, charge = await charged(billing, 100)
        refund = (await billing.refund(billing.user("admin"), charge["transaction_id"], 40)).json()
        events = [
            e
            for e in await billing.events("billing.refund_issued")
            if e.payload["transaction_id"] == refund["transaction_id"]
        ]
        assert len(events) == 1
        assert events[0].payload["charge_key"] == charge["key"]
        assert (
            events[0].payload["amount"],
            events[0].payload["creator_part"],
            events[0].payload["platform_part"],
        ) == (
            40,
            32,
            8,
        )
        assert events[0].payload["viewer_id"] == str(viewer.id)
        assert events[0].payload["creator_id"] == str(creator.id)


class TestRefundIdempotency:
    async def test_the_same_key_and_body_answer_the_first_refund(self, billing: BillingDriver):
        viewer, _, charge = await charged(billing, 300)
        admin = billing.user("admin")
        first = await billing.refund(admin, charge["transaction_id"], 100, key="r-1")
        again = await billing.refund(admin, charge["transaction_id"], 100, key="r-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert await billing.balance(viewer) == 800

    async def test_the_same_key_with_a_different_body_is_422(self, billing: BillingDriver):
        _, _, charge = await charged(billing, 300)
        admin = billing.user("admin")
        await billing.refund(admin, charge["transaction_id"], 100, key="r-2")
        reused = await billing.refund(admin, charge["transaction_id"], 50, key="r-2")
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")


class TestCreatorEarnings:
    async def test_earnings_are_the_shares_of_charges_per_video_less_refunds(self, billing: BillingDriver):
        creator, viewer = billing.user("creator"), billing.user()
        await billing.fund(viewer, 5000)
        popular, quiet = uuid.uuid4(), uuid.uuid4()
        session = uuid.uuid4()
        charges = []
        for unit, video in enumerate([popular, popular, popular, quiet]):
            body = charge_body(
                viewer=viewer.id, creator=creator.id, video=video, session=session, unit=unit, amount=100
            )
            charges.append((await billing.charge(body)).json())
        await billing.refund(billing.user("admin"), charges[0]["transaction_id"], 50)

        earnings = await billing.earnings(creator)

        assert earnings == {
            "total": 280,
            "currency": "USD",
            "videos": [
                {"video_id": str(popular), "amount": 200, "charges": 3},
                {"video_id": str(quiet), "amount": 80, "charges": 1},
            ],
        }

    async def test_nobody_sees_another_creators_earnings(self, billing: BillingDriver):
        _, creator, _ = await charged(billing, 100)
        other = billing.user("creator")
        assert (await billing.earnings(creator))["total"] == 80
        assert await billing.earnings(other) == {"total": 0, "currency": "USD", "videos": []}
