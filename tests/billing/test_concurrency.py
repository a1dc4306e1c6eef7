"""Money under concurrency: the database decides, so racing requests can neither overdraw a wallet
nor make one charge or one top-up twice. The requests run concurrently through the app, each on
its own database connection (the ledger pool holds several)."""

from __future__ import annotations

import asyncio
import uuid

from tests.billing.conftest import BillingDriver, charge_body


class TestDrainingOneWallet:
    async def test_three_sessions_charging_at_once_get_exactly_the_affordable_units(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 1500)
        price, video = 50, uuid.uuid4()
        balances_seen: list[int] = []

        async def stream() -> int:
            """A session charging its next unit until the wallet says no."""
            session, unit = uuid.uuid4(), 0
            while True:
                body = charge_body(
                    viewer=viewer.id,
                    creator=creator.id,
                    video=video,
                    session=session,
                    unit=unit,
                    amount=price,
                )
                response = await billing.charge(body)
                balances_seen.append(response.json()["balance"])
                if response.status_code == 402:
                    return unit
                assert response.status_code == 201, response.text
                unit += 1

        units = await asyncio.gather(stream(), stream(), stream())

        assert sum(units) == 1500 // price
        assert await billing.balance(viewer) == 0
        assert min(balances_seen) == 0
        assert (await billing.earnings(creator))["total"] == 30 * 40
        assert (await billing.verify()).ok

    async def test_a_wallet_never_pays_more_than_it_holds_whatever_the_amounts(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        amounts = [70, 130, 90, 250, 30, 310, 120, 60, 180, 40] * 3
        responses = await asyncio.gather(
            *(billing.charge(charge_body(viewer=viewer.id, amount=amount)) for amount in amounts)
        )
        paid = sum(amount for amount, r in zip(amounts, responses, strict=True) if r.status_code == 201)
        refused = [r for r in responses if r.status_code == 402]
        assert {r.status_code for r in responses} <= {201, 402}
        assert paid <= 1000
        assert await billing.balance(viewer) == 1000 - paid
        # Whoever was refused could not have paid at the moment they were refused.
        assert all(r.json()["balance"] < 310 for r in refused)


class TestDuplicateCharges:
    async def test_fifty_identical_charges_at_once_charge_once(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, amount=120)

        responses = await asyncio.gather(*(billing.charge(body) for _ in range(50)))

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 49 + [201]
        assert len({r.json()["transaction_id"] for r in responses}) == 1
        assert sum(not r.json()["replayed"] for r in responses) == 1
        assert await billing.balance(viewer) == 880
        assert await billing.transactions_with_key(body["key"]) == 1

    async def test_duplicates_of_a_charge_the_wallet_cannot_pay_all_say_so_and_write_nothing(
        self, billing: BillingDriver
    ):
        viewer = billing.user()
        await billing.fund(viewer, 100)
        body = charge_body(viewer=viewer.id, amount=120)
        responses = await asyncio.gather(*(billing.charge(body) for _ in range(20)))
        assert {r.status_code for r in responses} == {402}
        assert await billing.transactions_with_key(body["key"]) == 0


class TestParallelTopups:
    async def test_parallel_top_ups_with_one_key_make_one_top_up(self, billing: BillingDriver):
        user = billing.user()
        responses = await asyncio.gather(*(billing.topup(user, 2000, key="once") for _ in range(20)))
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["transaction_id"] for r in responses}) == 1
        assert {r.json()["balance"] for r in responses} == {2000}
        assert await billing.balance(user) == 2000

    async def test_parallel_top_ups_with_one_key_and_different_bodies_make_one_and_refuse_the_rest(
        self, billing: BillingDriver
    ):
        user = billing.user()
        responses = await asyncio.gather(*(billing.topup(user, 1000 + i, key="race") for i in range(10)))
        created = [r for r in responses if r.status_code == 201]
        assert len(created) == 1
        assert all(r.json()["code"] == "idempotency_key_reused" for r in responses if r.status_code != 201)
        assert await billing.balance(user) == created[0].json()["amount"]

    async def test_parallel_refunds_of_one_charge_never_exceed_it(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        charge = (await billing.charge(charge_body(viewer=viewer.id, amount=500))).json()
        admin = billing.user("admin")
        responses = await asyncio.gather(
            *(billing.refund(admin, charge["transaction_id"], 120) for _ in range(8))
        )
        assert sorted(r.status_code for r in responses) == [201] * 4 + [409] * 4
        assert await billing.balance(viewer) == 500 + 480
        assert (await billing.verify()).ok
