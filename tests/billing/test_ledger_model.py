"""A stateful property test: random top-ups, charges (new, replayed, reused keys, unaffordable)
and refunds through the API, against a small model of the money; after every step each wallet,
each creator's earnings and the platform's revenue equal the model's, and every ledger invariant
holds (``verify``).

Hypothesis drives stateful tests synchronously, so the app runs on an event loop of its own
(``asyncio.Runner``) for the duration of this test; each example uses fresh users.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from services.billing.app import create_app
from services.billing.service import split_charge
from services.billing.settings import BillingSettings
from tests.billing.conftest import BillingDriver, charge_body
from tests.identities import TokenMinter, User


@dataclass
class ModelCharge:
    body: dict[str, Any]
    transaction_id: str
    viewer: int
    creator: int
    amount: int
    fee: int
    refunded: int = 0
    refunded_fee: int = 0


class Harness:
    """The app on its own loop, and a driver to it, for the whole test."""

    def __init__(self, runner: asyncio.Runner, driver: BillingDriver) -> None:
        self.runner = runner
        self.driver = driver

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


class LedgerMachine(RuleBasedStateMachine):
    harness: Harness

    charges = Bundle("charges")

    def __init__(self) -> None:
        super().__init__()
        driver = self.harness.driver
        self.viewers: list[User] = [driver.user() for _ in range(2)]
        self.creators: list[User] = [driver.user("creator") for _ in range(2)]
        self.admin = driver.user("admin")
        self.balances = [0, 0]
        self.earned = [0, 0]
        self.platform = 0
        self.fee_bps = driver.settings.platform_fee_bps
        self.session = uuid.uuid4()
        self.next_unit = 0
        self.topups: list[tuple[User, int, str, dict[str, Any]]] = []

    @initialize(amounts=st.tuples(st.integers(100, 5000), st.integers(100, 5000)))
    def fund_the_viewers(self, amounts: tuple[int, int]) -> None:
        """Money to spend from the first step on, so charges and refunds happen early and often."""
        self.platform_start = self.harness.run(self.harness.driver.platform_revenue())
        for viewer, amount in enumerate(amounts):
            self.top_up(viewer, amount)

    # --- rules ---------------------------------------------------------------------------------

    @rule(viewer=st.integers(0, 1), amount=st.integers(100, 3000))
    def top_up(self, viewer: int, amount: int) -> None:
        key = uuid.uuid4().hex
        response = self.harness.run(self.harness.driver.topup(self.viewers[viewer], amount, key=key))
        assert response.status_code == 201, response.text
        self.balances[viewer] += amount
        assert response.json()["balance"] == self.balances[viewer]
        self.topups.append((self.viewers[viewer], amount, key, response.json()))

    @rule(pick=st.integers(0, 1000))
    def replay_a_top_up(self, pick: int) -> None:
        if not self.topups:
            return
        user, amount, key, first = self.topups[pick % len(self.topups)]
        response = self.harness.run(self.harness.driver.topup(user, amount, key=key))
        assert (response.status_code, response.json()) == (201, first)

    @rule(target=charges, viewer=st.integers(0, 1), creator=st.integers(0, 1), amount=st.integers(1, 1500))
    def charge(self, viewer: int, creator: int, amount: int) -> Any:
        body = charge_body(
            viewer=self.viewers[viewer].id,
            creator=self.creators[creator].id,
            session=self.session,
            unit=self.next_unit,
            amount=amount,
        )
        self.next_unit += 1
        response = self.harness.run(self.harness.driver.charge(body))
        if amount > self.balances[viewer]:
            assert response.status_code == 402, response.text
            assert response.json()["balance"] == self.balances[viewer]
            return multiple()
        assert response.status_code == 201, response.text
        share, fee = split_charge(amount, self.fee_bps)
        self.balances[viewer] -= amount
        self.earned[creator] += share
        self.platform += fee
        assert (response.json()["creator_share"], response.json()["platform_fee"]) == (share, fee)
        assert response.json()["balance"] == self.balances[viewer]
        return ModelCharge(body, response.json()["transaction_id"], viewer, creator, amount, fee)

    @rule(charge=charges)
    def replay_a_charge(self, charge: ModelCharge) -> None:
        response = self.harness.run(self.harness.driver.charge(charge.body))
        assert response.status_code == 200, response.text
        assert response.json()["transaction_id"] == charge.transaction_id
        assert response.json()["balance"] == self.balances[charge.viewer]

    @rule(charge=charges, extra=st.integers(1, 50))
    def reuse_a_charge_key_for_another_amount(self, charge: ModelCharge, extra: int) -> None:
        response = self.harness.run(
            self.harness.driver.charge({**charge.body, "amount": charge.amount + extra})
        )
        assert (response.status_code, response.json()["code"]) == (422, "idempotency_key_reused")

    @rule(charge=charges, percent=st.one_of(st.none(), st.integers(1, 100)))
    def refund(self, charge: ModelCharge, percent: int | None) -> None:
        """All that is left (None), or a part of the charge: several parts add up, or overshoot."""
        left = charge.amount - charge.refunded
        portion = None if percent is None else max(1, charge.amount * percent // 100)
        response = self.harness.run(self.harness.driver.refund(self.admin, charge.transaction_id, portion))
        amount = left if portion is None else portion
        if left == 0 or amount > left:
            assert response.status_code == 409, response.text
            assert response.json()["refundable"] == left
            return
        assert response.status_code == 201, response.text
        # Cumulative rounding: after this refund the platform has given back this much in all.
        fee_back = (charge.refunded + amount) * charge.fee // charge.amount - charge.refunded_fee
        charge.refunded += amount
        charge.refunded_fee += fee_back
        self.balances[charge.viewer] += amount
        self.earned[charge.creator] -= amount - fee_back
        self.platform -= fee_back
        assert (response.json()["platform_part"], response.json()["balance"]) == (
            fee_back,
            self.balances[charge.viewer],
        )

    @rule(charge=charges, parts=st.lists(st.integers(1, 60), min_size=2, max_size=4))
    def refund_in_parts(self, charge: ModelCharge, parts: list[int]) -> None:
        """Several partial refunds of one charge: their fee parts must add up by the documented
        rounding, and the last ones overshoot what is left."""
        for percent in parts:
            self.refund(charge, percent)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def money_matches_the_model(self) -> None:
        driver = self.harness.driver

        async def observe() -> tuple[list[int], list[int], int]:
            balances = [await driver.balance(viewer) for viewer in self.viewers]
            earned = [(await driver.earnings(creator))["total"] for creator in self.creators]
            return balances, earned, await driver.platform_revenue()

        balances, earned, platform = self.harness.run(observe())
        assert balances == self.balances
        assert earned == self.earned
        assert platform - self.platform_start == self.platform

    @invariant()
    def every_ledger_invariant_holds(self) -> None:
        report = self.harness.run(self.harness.driver.verify())
        assert report.ok, report.violations


@pytest.mark.slow
class TestLedgerStateMachine:
    def test_random_money_movements_keep_the_ledger_exact(
        self, billing_settings: BillingSettings, minter: TokenMinter
    ) -> None:
        with asyncio.Runner() as runner:
            app = create_app(billing_settings, jwks_loader=minter.loader)

            async def start() -> LifespanManager:
                manager = LifespanManager(app)  # detects the running loop, so made inside it
                await manager.__aenter__()
                return manager

            manager = runner.run(start())
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
            )
            try:
                LedgerMachine.harness = Harness(runner, BillingDriver(app, client, minter))
                run_state_machine_as_test(
                    LedgerMachine,
                    settings=settings(
                        max_examples=25,
                        stateful_step_count=15,
                        deadline=None,
                        # Examples run on a shared database: replaying saved ones in later runs adds nothing.
                        database=None,
                        suppress_health_check=[HealthCheck.too_slow],
                    ),
                )
            finally:
                runner.run(client.aclose())
                runner.run(manager.__aexit__(None, None, None))
