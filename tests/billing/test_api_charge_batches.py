"""``POST /internal/charges/batch``: many units in one database transaction (group commit), each
answered exactly as ``POST /internal/charges`` would have answered it alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.billing.conftest import BillingDriver, charge_body


async def batch(
    billing: BillingDriver, charges: list[dict[str, Any]], caller: str = "streaming"
) -> httpx.Response:
    return await billing.client.post(
        "/internal/charges/batch", json={"charges": charges}, headers=billing.internal_headers(caller)
    )


def results(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    answers: list[dict[str, Any]] = response.json()["results"]
    return answers


class TestABatchOfCharges:
    async def test_each_charge_is_answered_as_alone_and_only_the_refused_ones_write_nothing(
        self, billing: BillingDriver
    ):
        rich, poor, creator = billing.user(), billing.user(), billing.user("creator")
        await billing.fund(rich, 1000)
        await billing.fund(poor, 150)
        session, poor_session = uuid.uuid4(), uuid.uuid4()
        paid_before = charge_body(viewer=rich.id, creator=creator.id, session=session, unit=0, amount=100)
        assert (await billing.charge(paid_before)).status_code == 201
        reused = charge_body(viewer=rich.id, creator=creator.id, session=session, unit=1, amount=100)
        assert (await billing.charge(reused)).status_code == 201
        charges = [
            charge_body(viewer=rich.id, creator=creator.id, session=session, unit=2, amount=250),
            paid_before,  # a retry: the first result again, nothing new
            charge_body(viewer=poor.id, creator=creator.id, session=poor_session, unit=0, amount=100),
            charge_body(
                viewer=poor.id, creator=creator.id, session=poor_session, unit=1, amount=100
            ),  # 50 left
            {**reused, "amount": 999},  # the same key with other terms
            charge_body(viewer=rich.id, creator=rich.id, amount=100),  # a creator's own video
            charge_body(viewer=rich.id, creator=creator.id, amount=100, currency="EUR"),
        ]

        answers = results(await batch(billing, charges))

        assert [a["key"] for a in answers] == [c["key"] for c in charges]
        assert [a["status"] for a in answers] == [201, 200, 201, 402, 422, 422, 422]
        assert answers[0] | {"transaction_id": None} == {
            "key": charges[0]["key"],
            "status": 201,
            "transaction_id": None,
            "amount": 250,
            "creator_share": 200,
            "platform_fee": 50,
            "balance": 1000 - 200 - 250,
            "currency": "USD",
            "replayed": False,
        }
        assert answers[1]["replayed"] is True and answers[1]["amount"] == 100
        assert answers[3]["code"] == "insufficient_funds" and answers[3]["balance"] == 50
        assert [a["code"] for a in answers[4:]] == [
            "idempotency_key_reused",
            "self_charge",
            "unsupported_currency",
        ]
        assert await billing.balance(rich) == 550
        assert await billing.balance(poor) == 50
        assert (await billing.earnings(creator))["total"] == (100 + 100 + 250 + 100) * 8 // 10
        assert await billing.transactions_with_key(paid_before["key"]) == 1
        assert (await billing.verify()).ok

    async def test_a_batch_and_single_calls_with_the_same_keys_make_one_charge_each(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 10_000)
        charges = [charge_body(viewer=viewer.id, creator=creator.id, unit=u, amount=10) for u in range(20)]

        answers = await asyncio.gather(
            batch(billing, charges), batch(billing, charges[::-1]), *(billing.charge(c) for c in charges[:5])
        )

        assert all(r.status_code in (200, 201) for r in answers[2:])
        assert all(a["status"] in (200, 201) for r in answers[:2] for a in results(r))
        assert await billing.balance(viewer) == 10_000 - 20 * 10
        for charge in charges:
            assert await billing.transactions_with_key(charge["key"]) == 1
        assert (await billing.verify()).ok

    async def test_batches_draining_shared_wallets_in_opposite_orders_charge_exactly_what_is_affordable(
        self, billing: BillingDriver
    ):
        viewers = [billing.user() for _ in range(4)]
        creator = billing.user("creator")
        for viewer in viewers:
            await billing.fund(viewer, 150)
        # Each batch has ten units of 20 for every viewer, in turns; 7 of a viewer's 40 fit in 150.
        batches = []
        for b in range(4):
            order = viewers if b % 2 == 0 else viewers[::-1]
            batches.append(
                [charge_body(viewer=v.id, creator=creator.id, session=uuid.uuid4(), amount=20) for v in order]
                * 10
            )
        batches = [[{**c, **_fresh_unit(c)} for c in b] for b in batches]

        answers = await asyncio.gather(*(batch(billing, b) for b in batches))

        charged = sum(a["status"] == 201 for r in answers for a in results(r))
        refused = sum(a["status"] == 402 for r in answers for a in results(r))
        assert (charged, refused) == (4 * 7, 160 - 4 * 7)
        assert [await billing.balance(v) for v in viewers] == [10, 10, 10, 10]
        assert (await billing.verify()).ok

    async def test_batches_paying_new_creators_in_different_orders_do_not_deadlock(
        self, billing: BillingDriver
    ):
        # Each batch pays the same five creators nobody has paid yet, in its own order: their
        # earnings accounts must not be created inside the charge transactions (two batches
        # creating them in opposite orders would wait for each other).
        for _ in range(3):
            viewers = [billing.user() for _ in range(6)]
            creators = [uuid.uuid4() for _ in range(5)]
            for viewer in viewers:
                await billing.fund(viewer, 1_000)
            batches = [
                [
                    charge_body(
                        viewer=viewer.id, creator=creators[(i + b) % 5], session=uuid.uuid4(), amount=10
                    )
                    for i in range(5)
                ]
                for b, viewer in enumerate(viewers)
            ]
            answers = await asyncio.gather(*(batch(billing, b) for b in batches))
            assert [a["status"] for r in answers for a in results(r)] == [201] * 30
        assert (await billing.verify()).ok


def _fresh_unit(charge: dict[str, Any]) -> dict[str, Any]:
    session = uuid.uuid4()
    return {"key": f"{session}:0", "session_id": str(session)}


class TestBatchRefusals:
    async def test_more_than_fifty_charges_or_none_are_refused_whole(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 10_000)
        too_many = [charge_body(viewer=viewer.id, amount=1) for _ in range(51)]

        for charges in (too_many, []):
            response = await batch(billing, charges)
            assert response.status_code == 422
            assert response.headers["content-type"].startswith("application/problem+json")
        assert await billing.balance(viewer) == 10_000

    async def test_only_the_streaming_service_may_charge(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 100)
        response = await batch(billing, [charge_body(viewer=viewer.id, amount=10)], caller="catalog")
        assert response.status_code == 403
        response = await billing.client.post("/internal/charges/batch", json={"charges": []})
        assert response.status_code == 401
        assert await billing.balance(viewer) == 100
