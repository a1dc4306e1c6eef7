"""Payment providers: the built-in sandbox, another one chosen by setting, and what a top-up does
when the provider fails (nothing in the ledger, a clear answer, safe to retry with the same key)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from services.billing.app import create_app
from services.billing.payments import SandboxProvider, provider_from_settings
from services.billing.settings import BillingSettings
from tests.billing.conftest import BillingDriver
from tests.billing.providers import RecordingProvider
from tests.identities import TokenMinter


class TestChoosingAProvider:
    def test_the_sandbox_is_the_default(self, billing_settings: BillingSettings):
        assert isinstance(provider_from_settings(billing_settings), SandboxProvider)

    def test_another_provider_is_named_by_its_factory(self, billing_settings: BillingSettings):
        settings = billing_settings.model_copy(
            update={"payment_provider": "tests.billing.providers:recording"}
        )
        assert isinstance(provider_from_settings(settings), RecordingProvider)

    @pytest.mark.parametrize("spec", ["stripe", "tests.billing.providers:not_a_provider"])
    def test_a_provider_that_is_not_one_is_refused_at_start(self, billing_settings: BillingSettings, spec):
        settings = billing_settings.model_copy(update={"payment_provider": spec})
        with pytest.raises((ValueError, TypeError)):
            provider_from_settings(settings)

    def test_the_sandbox_is_refused_in_production(self, billing_settings: BillingSettings):
        secret = "a-real-production-secret-of-enough-length"
        with pytest.raises(ValidationError, match="sandbox"):
            BillingSettings(
                database_url=billing_settings.database_url, environment="production", internal_secret=secret
            )
        demo = BillingSettings(
            database_url=billing_settings.database_url,
            environment="production",
            internal_secret=secret,
            sandbox_in_production=True,
        )
        assert demo.payment_provider == "sandbox"


async def billing_with(
    asgi_client: Callable[..., Any], settings: BillingSettings, minter: TokenMinter, provider: str
) -> Any:
    app = create_app(settings.model_copy(update={"payment_provider": provider}), jwks_loader=minter.loader)
    return app, asgi_client(app)


class TestAPluggedInProvider:
    async def test_it_is_asked_once_per_key_with_the_ledger_key_as_its_idempotency_key(
        self, asgi_client, billing_settings: BillingSettings, minter: TokenMinter
    ):
        app, opened = await billing_with(
            asgi_client, billing_settings, minter, "tests.billing.providers:recording"
        )
        async with opened as client:
            driver = BillingDriver(app, client, minter)
            user = driver.user()
            first = await driver.topup(user, 1500, key="abc", method="pm_card_visa")
            again = await driver.topup(user, 1500, key="abc", method="pm_card_visa")
            assert (first.status_code, again.json()) == (201, first.json())
            provider: RecordingProvider = app.state.billing.provider
            assert [(r.amount, r.payment_method, r.idempotency_key) for r in provider.requests] == [
                (1500, "pm_card_visa", f"topup:{user.id}:abc")
            ]
            assert await driver.balance(user) == 1500

    @pytest.mark.parametrize("provider", ["unreachable", "slow"])
    async def test_a_failing_provider_is_503_and_nothing_is_written(
        self, asgi_client, billing_settings: BillingSettings, minter: TokenMinter, provider: str
    ):
        settings = billing_settings.model_copy(update={"payment_timeout_s": 0.2})
        app, opened = await billing_with(asgi_client, settings, minter, f"tests.billing.providers:{provider}")
        async with opened as client:
            driver = BillingDriver(app, client, minter)
            user = driver.user()
            key = uuid.uuid4().hex
            response = await driver.topup(user, 1500, key=key)
            assert (response.status_code, response.json()["code"]) == (503, "payment_provider_unavailable")
            assert await driver.balance(user) == 0
            assert await driver.transactions_with_key(f"topup:{user.id}:{key}") == 0
