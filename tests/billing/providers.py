"""Payment providers at the edge of the world, for tests: plugged in by the same setting a real one
would use (``BILLING_PAYMENT_PROVIDER=tests.billing.providers:<factory>``)."""

from __future__ import annotations

import asyncio

from services.billing.payments import PaymentProviderError, PaymentRequest, PaymentResult
from services.billing.settings import BillingSettings


class RecordingProvider:
    """Approves everything and remembers what it was asked, as a provider's dashboard would."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[PaymentRequest] = []

    async def charge(self, request: PaymentRequest) -> PaymentResult:
        self.requests.append(request)
        return PaymentResult(approved=True, reference=f"rec_{len(self.requests)}")


class UnreachableProvider:
    name = "unreachable"

    async def charge(self, request: PaymentRequest) -> PaymentResult:
        raise PaymentProviderError("connection refused")


class SlowProvider:
    name = "slow"

    async def charge(self, request: PaymentRequest) -> PaymentResult:
        await asyncio.sleep(5)
        return PaymentResult(approved=True, reference="too-late")


def recording(settings: BillingSettings) -> RecordingProvider:
    return RecordingProvider()


def unreachable(settings: BillingSettings) -> UnreachableProvider:
    return UnreachableProvider()


def slow(settings: BillingSettings) -> SlowProvider:
    return SlowProvider()


def not_a_provider(settings: BillingSettings) -> object:
    return object()
