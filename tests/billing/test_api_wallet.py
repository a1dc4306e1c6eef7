"""A user's wallet: the balance, top-ups through the sandbox provider with Idempotency-Key, the
statement (newest first, cursor pages, signed amounts), and nobody else's wallet."""

from __future__ import annotations

import uuid

import pytest

from tests.billing.conftest import BillingDriver, charge_body


class TestWallet:
    async def test_a_new_user_has_an_empty_wallet(self, billing: BillingDriver):
        response = await billing.client.get("/wallet", headers=billing.user().headers)
        assert response.json() == {"balance": 0, "currency": "USD"}

    async def test_the_wallet_needs_a_signed_in_user(self, billing: BillingDriver):
        for path in ("/wallet", "/wallet/transactions", "/creator/earnings"):
            response = await billing.client.get(path)
            assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
        topup = await billing.client.post(
            "/wallet/topups", json={"amount": 500, "payment_method": "test_card"}
        )
        assert topup.status_code == 401


class TestTopups:
    async def test_a_sandbox_test_card_top_up_credits_the_wallet(self, billing: BillingDriver):
        user = billing.user()
        response = await billing.topup(user, 2500)
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["status"], body["amount"], body["balance"], body["currency"]) == (
            "succeeded",
            2500,
            2500,
            "USD",
        )
        wallet = await billing.client.get("/wallet", headers=user.headers)
        assert wallet.json() == {"balance": 2500, "currency": "USD"}

    async def test_a_declined_card_is_402_and_leaves_no_trace_in_the_ledger(self, billing: BillingDriver):
        user = billing.user()
        response = await billing.topup(user, 2500, method="test_card_declined", key="declined-1")
        assert response.status_code == 402
        assert (response.json()["code"], response.json()["decline_code"]) == (
            "payment_declined",
            "card_declined",
        )
        assert await billing.balance(user) == 0
        assert await billing.transactions_with_key(f"topup:{user.id}:declined-1") == 0
        statement = await billing.client.get("/wallet/transactions", headers=user.headers)
        assert statement.json()["items"] == []

    async def test_payment_methods_the_sandbox_does_not_know_are_refused(self, billing: BillingDriver):
        response = await billing.topup(billing.user(), 500, method="4242424242424242")
        assert (response.status_code, response.json()["code"]) == (422, "invalid_payment_method")
        assert "test_card" in response.json()["detail"]

    @pytest.mark.parametrize("amount", [99, 100_001])
    async def test_amounts_outside_the_configured_bounds_are_refused(self, billing: BillingDriver, amount):
        response = await billing.topup(billing.user(), amount)
        assert (response.status_code, response.json()["code"]) == (422, "amount_out_of_range")
        assert (response.json()["minimum"], response.json()["maximum"]) == (100, 100_000)

    @pytest.mark.parametrize("amount", [0, -100, 1.5, "100"])
    async def test_amounts_that_are_not_positive_whole_cents_are_invalid(
        self, billing: BillingDriver, amount
    ):
        user = billing.user()
        response = await billing.client.post(
            "/wallet/topups", json={"amount": amount, "payment_method": "test_card"}, headers=user.headers
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")

    async def test_a_top_up_publishes_topup_succeeded_after_it_landed(self, billing: BillingDriver):
        user = billing.user()
        created = (await billing.topup(user, 700)).json()
        events = [
            e for e in await billing.events("billing.topup_succeeded") if e.payload["user_id"] == str(user.id)
        ]
        assert [e.payload for e in events] == [
            {
                "transaction_id": created["transaction_id"],
                "user_id": str(user.id),
                "amount": 700,
                "balance": 700,
                "currency": "USD",
            }
        ]


class TestTopupIdempotency:
    async def test_the_same_key_and_body_answer_the_first_response_with_the_same_status(
        self, billing: BillingDriver
    ):
        user = billing.user()
        first = await billing.topup(user, 1000, key="k-1")
        await billing.fund(user, 300)  # the balance moves on; the replay still says what the first said
        again = await billing.topup(user, 1000, key="k-1")

        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await billing.balance(user) == 1300

    @pytest.mark.parametrize("change", [{"amount": 1001}, {"method": "test_card_declined"}])
    async def test_the_same_key_with_a_different_body_is_422(self, billing: BillingDriver, change):
        user = billing.user()
        await billing.topup(user, 1000, key="k-2")
        reused = await billing.topup(
            user, change.get("amount", 1000), key="k-2", method=change.get("method", "test_card")
        )
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
        assert await billing.balance(user) == 1000

    async def test_keys_belong_to_their_user(self, billing: BillingDriver):
        alice, bob = billing.user(), billing.user()
        assert (await billing.topup(alice, 1000, key="shared")).status_code == 201
        assert (await billing.topup(bob, 500, key="shared")).status_code == 201
        assert (await billing.balance(alice), await billing.balance(bob)) == (1000, 500)

    async def test_without_a_key_every_request_is_a_new_top_up(self, billing: BillingDriver):
        user = billing.user()
        await billing.topup(user, 1000)
        await billing.topup(user, 1000)
        assert await billing.balance(user) == 2000

    @pytest.mark.parametrize("key", ["", "x" * 201, "has space", "na\u00efve".encode("latin-1")])
    async def test_malformed_keys_are_refused(self, billing: BillingDriver, key):
        user = billing.user()
        response = await billing.client.post(
            "/wallet/topups",
            json={"amount": 500, "payment_method": "test_card"},
            headers={**user.headers, "Idempotency-Key": key},
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_idempotency_key")


class TestWalletTransactions:
    async def test_the_statement_lists_signed_amounts_newest_first_with_running_balances(
        self, billing: BillingDriver
    ):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        session, video = uuid.uuid4(), uuid.uuid4()
        charged = await billing.charge(
            charge_body(viewer=viewer.id, session=session, video=video, amount=250)
        )

        response = await billing.client.get("/wallet/transactions", headers=viewer.headers)

        items = response.json()["items"]
        assert [(i["kind"], i["amount"], i["balance_after"]) for i in items] == [
            ("charge", -250, 750),
            ("topup", 1000, 1000),
        ]
        assert items[0]["id"] == charged.json()["transaction_id"]
        assert (items[0]["video_id"], items[0]["session_id"], items[0]["unit"]) == (
            str(video),
            str(session),
            0,
        )
        assert response.json()["next_cursor"] is None

    async def test_pages_follow_the_cursor_without_gaps_or_repeats(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 5000)
        session = uuid.uuid4()
        for unit in range(6):
            await billing.charge(charge_body(viewer=viewer.id, session=session, unit=unit, amount=10 + unit))
        seen: list[int] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (
                await billing.client.get("/wallet/transactions", params=params, headers=viewer.headers)
            ).json()
            seen += [item["amount"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [-15, -14, -13, -12, -11, -10, 5000]

    async def test_a_forged_cursor_is_refused(self, billing: BillingDriver):
        response = await billing.client.get(
            "/wallet/transactions", params={"cursor": "not-a-cursor"}, headers=billing.user().headers
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_cursor")

    async def test_one_transaction_of_your_own_wallet(self, billing: BillingDriver):
        viewer = billing.user()
        created = (await billing.topup(viewer, 800)).json()
        response = await billing.client.get(
            f"/wallet/transactions/{created['transaction_id']}", headers=viewer.headers
        )
        assert (response.json()["kind"], response.json()["amount"]) == ("topup", 800)


class TestNobodyElsesWallet:
    async def test_another_users_transaction_is_not_found_like_one_that_does_not_exist(
        self, billing: BillingDriver
    ):
        alice, mallory = billing.user(), billing.user()
        created = (await billing.topup(alice, 800)).json()
        theirs = await billing.client.get(
            f"/wallet/transactions/{created['transaction_id']}", headers=mallory.headers
        )
        missing = await billing.client.get(f"/wallet/transactions/{uuid.uuid4()}", headers=mallory.headers)
        assert (theirs.status_code, theirs.json()["code"]) == (404, "transaction_not_found")
        assert theirs.json()["detail"] == missing.json()["detail"]

    async def test_a_creator_cannot_read_a_charge_that_paid_them_as_a_wallet_line(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 800)
        charged = (await billing.charge(charge_body(viewer=viewer.id, creator=creator.id))).json()
        response = await billing.client.get(
            f"/wallet/transactions/{charged['transaction_id']}", headers=creator.headers
        )
        assert response.status_code == 404

    async def test_lists_show_only_your_own_money(self, billing: BillingDriver):
        alice, mallory = billing.user(), billing.user()
        await billing.fund(alice, 800)
        await billing.fund(mallory, 100)
        alice_page = (await billing.client.get("/wallet/transactions", headers=alice.headers)).json()
        cursor = alice_page["next_cursor"]
        assert cursor is None
        mallory_page = (await billing.client.get("/wallet/transactions", headers=mallory.headers)).json()
        mallory_wallet = (await billing.client.get("/wallet", headers=mallory.headers)).json()
        assert [item["amount"] for item in mallory_page["items"]] == [100]
        assert mallory_wallet["balance"] == 100

    async def test_paths_with_a_user_id_are_not_served(self, billing: BillingDriver):
        alice, mallory = billing.user(), billing.user()
        await billing.fund(alice, 800)
        for path in (f"/wallet/{alice.id}", f"/wallets/{alice.id}", f"/creator/{alice.id}/earnings"):
            response = await billing.client.get(path, headers=mallory.headers)
            assert response.status_code == 404
