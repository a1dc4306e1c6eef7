"""Payment providers: where top-up money comes from.

A provider is anything with ``name`` and ``async charge(PaymentRequest) -> PaymentResult``
(:class:`PaymentProvider`). The setting ``BILLING_PAYMENT_PROVIDER`` picks one: ``sandbox`` (built
in, below), or ``package.module:factory`` for another, where ``factory(settings)`` returns the
provider. The request carries an idempotency key (the ledger key of the top-up), which a real
provider must pass on to its API, so a retried top-up never takes the money twice.

Outcomes: an approved payment (with the provider's reference, recorded on the top-up), a decline
(402 ``payment_declined``, nothing in the ledger), :class:`UnsupportedPaymentMethod` (422) or
:class:`PaymentProviderError` (503; nothing in the ledger, the client retries with the same key).

The sandbox accepts two test payment methods and nothing else:

==========================  ==============================================
``test_card``               approved
``test_card_declined``      declined (``card_declined``)
==========================  ==============================================
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.billing.settings import BillingSettings


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    amount: int
    currency: str
    payment_method: str
    idempotency_key: str
    user_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PaymentResult:
    approved: bool
    # The provider's id for the payment (approved) or the attempt (declined).
    reference: str
    decline_code: str | None = None


class UnsupportedPaymentMethod(Exception):
    """The provider does not know this payment method (a client error, not a decline)."""


class PaymentProviderError(Exception):
    """The provider could not decide (unreachable, timed out, its own error): retry later."""


@runtime_checkable
class PaymentProvider(Protocol):
    name: str

    async def charge(self, request: PaymentRequest) -> PaymentResult: ...


SANDBOX_APPROVED = "test_card"
SANDBOX_DECLINED = "test_card_declined"


class SandboxProvider:
    """Takes no money: ``test_card`` is approved, ``test_card_declined`` declined.

    Deterministic in the idempotency key, as a real provider is: the same key gets the same reference.
    """

    name = "sandbox"

    async def charge(self, request: PaymentRequest) -> PaymentResult:
        digest = hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:24]
        if request.payment_method == SANDBOX_APPROVED:
            return PaymentResult(approved=True, reference=f"sandbox_pay_{digest}")
        if request.payment_method == SANDBOX_DECLINED:
            return PaymentResult(
                approved=False, reference=f"sandbox_dec_{digest}", decline_code="card_declined"
            )
        raise UnsupportedPaymentMethod(
            f"The sandbox accepts '{SANDBOX_APPROVED}' (succeeds) and '{SANDBOX_DECLINED}' (declines)."
        )


def provider_from_settings(settings: BillingSettings) -> PaymentProvider:
    """The configured provider: ``sandbox`` or ``package.module:factory``."""
    spec = settings.payment_provider
    if spec == "sandbox":
        return SandboxProvider()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"BILLING_PAYMENT_PROVIDER must be 'sandbox' or 'package.module:factory', not {spec!r}"
        )
    factory = getattr(importlib.import_module(module_name), attribute)
    provider = factory(settings)
    if not isinstance(provider, PaymentProvider):
        raise TypeError(f"{spec} did not return a PaymentProvider")
    return provider
