"""The internal charge API streaming calls once per billing unit, and the wallet lookup."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.events import event_id
from common.internal import SERVICE_TOKEN_HEADER, mint_service_token
from tests.billing.conftest import BillingDriver, charge_body


class TestChargingAUnit:
    async def test_the_viewer_pays_the_creator_earns_the_share_and_the_platform_the_fee(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 1000)
        platform_before = await billing.platform_revenue()
        body = charge_body(viewer=viewer.id, creator=creator.id, amount=250)

        response = await billing.charge(body)

        assert response.status_code == 201, response.text
        charged = response.json()
        assert charged == {
            "transaction_id": charged["transaction_id"],
            "key": body["key"],
            "amount": 250,
            "creator_share": 200,
            "platform_fee": 50,
            "balance": 750,
            "currency": "USD",
            "replayed": False,
        }
        assert await billing.balance(viewer) == 750
        assert (await billing.earnings(creator))["total"] == 200
        assert await billing.platform_revenue() - platform_before == 50

    @pytest.mark.parametrize(
        ("amount", "creator_share", "platform_fee"),
        [(1, 1, 0), (4, 4, 0), (5, 4, 1), (333, 267, 66), (999, 800, 199), (10_000, 8_000, 2_000)],
    )
    async def test_the_fee_rounds_down_so_fractions_of_a_cent_go_to_the_creator(
        self, billing: BillingDriver, amount: int, creator_share: int, platform_fee: int
    ):
        viewer = billing.user()
        await billing.fund(viewer, 10_000)
        response = await billing.charge(charge_body(viewer=viewer.id, amount=amount))
        assert response.status_code == 201, response.text
        assert (response.json()["creator_share"], response.json()["platform_fee"]) == (
            creator_share,
            platform_fee,
        )

    async def test_the_fee_rate_is_a_setting(self, billing: BillingDriver, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(billing.settings, "platform_fee_bps", 1250)
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        response = await billing.charge(charge_body(viewer=viewer.id, amount=100))
        assert (response.json()["creator_share"], response.json()["platform_fee"]) == (88, 12)

    async def test_each_unit_of_a_session_is_its_own_charge(self, billing: BillingDriver):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 1000)
        session, video = uuid.uuid4(), uuid.uuid4()
        for unit in range(3):
            body = charge_body(viewer=viewer.id, creator=creator.id, video=video, session=session, unit=unit)
            assert (await billing.charge(body)).status_code == 201
        assert await billing.balance(viewer) == 700
        earnings = await billing.earnings(creator)
        assert earnings["videos"] == [{"video_id": str(video), "amount": 240, "charges": 3}]


class TestReplayingACharge:
    async def test_the_same_key_and_body_answer_the_first_charge_without_charging_again(
        self, billing: BillingDriver
    ):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, amount=300)
        first = await billing.charge(body)
        second = await billing.charge(body)

        assert (first.status_code, second.status_code) == (201, 200)
        assert second.json() == {**first.json(), "replayed": True}
        assert await billing.balance(viewer) == 700
        assert await billing.transactions_with_key(body["key"]) == 1

    async def test_a_replay_reports_the_balance_as_it_is_now(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, amount=300)
        await billing.charge(body)
        await billing.fund(viewer, 500)
        replay = await billing.charge(body)
        assert replay.json()["balance"] == 1200

    @pytest.mark.parametrize("change", [{"amount": 301}, {"video_id": str(uuid.uuid4())}])
    async def test_the_same_key_with_a_different_body_is_refused(self, billing: BillingDriver, change):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, amount=300)
        await billing.charge(body)
        reused = await billing.charge({**body, **change})
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
        assert await billing.balance(viewer) == 700


class TestInsufficientFunds:
    async def test_a_charge_the_wallet_cannot_pay_is_402_with_the_balance_and_writes_nothing(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 150)
        body = charge_body(viewer=viewer.id, creator=creator.id, amount=151)

        response = await billing.charge(body)

        assert response.status_code == 402
        assert response.headers["content-type"] == "application/problem+json"
        assert (response.json()["code"], response.json()["balance"]) == ("insufficient_funds", 150)
        assert await billing.balance(viewer) == 150
        assert await billing.transactions_with_key(body["key"]) == 0
        assert (await billing.earnings(creator))["total"] == 0

    async def test_a_viewer_who_never_topped_up_has_nothing_to_pay_with(self, billing: BillingDriver):
        response = await billing.charge(charge_body(viewer=uuid.uuid4(), amount=1))
        assert (response.status_code, response.json()["balance"]) == (402, 0)

    async def test_the_exact_balance_can_be_spent_down_to_zero(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 200)
        assert (await billing.charge(charge_body(viewer=viewer.id, amount=200))).status_code == 201
        assert await billing.balance(viewer) == 0

    async def test_the_same_key_is_charged_once_the_wallet_is_topped_up(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 100)
        body = charge_body(viewer=viewer.id, amount=150)
        assert (await billing.charge(body)).status_code == 402
        await billing.fund(viewer, 100)
        retried = await billing.charge(body)
        assert (retried.status_code, retried.json()["balance"]) == (201, 50)


class TestChargeValidation:
    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"key": f"{uuid.uuid4()}:0"}, "invalid_charge_key"),
            ({"unit": 1}, "invalid_charge_key"),
            ({"currency": "EUR"}, "unsupported_currency"),
            ({"amount": 0}, "validation_error"),
            ({"amount": -5}, "validation_error"),
            ({"unit": -1, "key": "x:-1"}, "validation_error"),
            ({"surprise": True}, "validation_error"),
        ],
    )
    async def test_malformed_charges_are_refused(self, billing: BillingDriver, change, code):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        response = await billing.charge({**charge_body(viewer=viewer.id), **change})
        assert (response.status_code, response.json()["code"]) == (422, code)
        assert await billing.balance(viewer) == 1000

    async def test_a_body_that_is_not_json_is_a_validation_error(self, billing: BillingDriver):
        response = await billing.client.post(
            "/internal/charges", content=b"{not json", headers=billing.internal_headers()
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        assert response.json()["errors"][0]["loc"][0] == "body"

    async def test_creators_are_never_charged_for_their_own_videos(self, billing: BillingDriver):
        creator = billing.user("creator")
        await billing.fund(creator, 1000)
        response = await billing.charge(charge_body(viewer=creator.id, creator=creator.id))
        assert (response.status_code, response.json()["code"]) == (422, "self_charge")


class TestServiceCredentials:
    async def test_charges_need_the_streaming_services_credential(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id)
        anonymous = await billing.client.post("/internal/charges", json=body)
        as_user = await billing.client.post("/internal/charges", json=body, headers=viewer.headers)
        as_catalog = await billing.charge(body, caller="catalog")
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "service_token_required")
        assert as_user.status_code == 401
        assert (as_catalog.status_code, as_catalog.json()["code"]) == (403, "service_not_allowed")
        assert await billing.balance(viewer) == 1000

    async def test_a_credential_stops_working_when_it_expires_even_after_being_used(
        self, billing: BillingDriver
    ):
        viewer = billing.user()
        await billing.fund(viewer, 1000)
        # Expiry is in whole seconds: valid for at least one more second, expired after 2.1 s.
        token = mint_service_token(billing.settings.internal_secret, "streaming", ttl_s=2)
        headers = {SERVICE_TOKEN_HEADER: token}
        session = uuid.uuid4()
        first = await billing.client.post(
            "/internal/charges", json=charge_body(viewer=viewer.id, session=session), headers=headers
        )
        await asyncio.sleep(2.1)
        later = await billing.client.post(
            "/internal/charges", json=charge_body(viewer=viewer.id, session=session, unit=1), headers=headers
        )
        assert (first.status_code, later.status_code) == (201, 401)
        assert await billing.balance(viewer) == 900

    async def test_services_read_a_wallet_balance(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 420)
        response = await billing.client.get(
            f"/internal/wallets/{viewer.id}", headers=billing.internal_headers("streaming")
        )
        assert response.json() == {"user_id": str(viewer.id), "balance": 420, "currency": "USD"}
        unknown = await billing.client.get(
            f"/internal/wallets/{uuid.uuid4()}", headers=billing.internal_headers("analytics")
        )
        assert (unknown.status_code, unknown.json()["balance"]) == (200, 0)
        anonymous = await billing.client.get(f"/internal/wallets/{viewer.id}")
        assert anonymous.status_code == 401


class TestChargeEvents:
    async def test_a_charge_publishes_unit_charged_with_the_charge_key_as_identity(
        self, billing: BillingDriver
    ):
        viewer, creator = billing.user(), billing.user("creator")
        await billing.fund(viewer, 1000)
        body = charge_body(viewer=viewer.id, creator=creator.id, amount=100)
        charged = (await billing.charge(body)).json()
        await billing.charge(body)  # a replay is the same fact: its event was written the first time

        events = [e for e in await billing.events("billing.unit_charged") if e.payload["key"] == body["key"]]
        assert [event.id for event in events] == [event_id("billing.unit_charged", body["key"])]
        assert events[0].payload == {
            "transaction_id": charged["transaction_id"],
            "key": body["key"],
            "session_id": body["session_id"],
            "unit": 0,
            "viewer_id": str(viewer.id),
            "creator_id": str(creator.id),
            "video_id": body["video_id"],
            "amount": 100,
            "creator_share": 80,
            "platform_fee": 20,
            "currency": "USD",
        }

    async def test_a_refused_charge_publishes_nothing(self, billing: BillingDriver):
        body = charge_body(viewer=uuid.uuid4(), amount=100)
        assert (await billing.charge(body)).status_code == 402
        assert not [
            e for e in await billing.events("billing.unit_charged") if e.payload["key"] == body["key"]
        ]
