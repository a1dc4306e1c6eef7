"""Billing's expected failures, each with a stable problem code."""

from __future__ import annotations

from common.errors import AppError, Conflict, NotFound, ServiceUnavailable, Unauthorized, Unprocessable


class PaymentRequired(AppError):
    status, code = 402, "payment_required"


class InsufficientFunds(PaymentRequired):
    # Extension "balance": the wallet's current balance; nothing was written.
    code = "insufficient_funds"
    title = "The wallet's balance does not cover this charge; top up and try again."


class PaymentDeclined(PaymentRequired):
    code = "payment_declined"
    title = "The payment method was declined; nothing was charged."


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"
    title = "This key was already used for a different request; use a new key for a new request."


class InvalidIdempotencyKey(Unprocessable):
    code = "invalid_idempotency_key"
    title = "Idempotency-Key must be 1 to 200 visible ASCII characters."


class AmountOutOfRange(Unprocessable):
    code = "amount_out_of_range"


class UnsupportedCurrency(Unprocessable):
    code = "unsupported_currency"


class InvalidPaymentMethod(Unprocessable):
    code = "invalid_payment_method"


class InvalidChargeKey(Unprocessable):
    code = "invalid_charge_key"
    title = "A charge key is '<session_id>:<unit>' of the charge's own session and unit."


class SelfCharge(Unprocessable):
    code = "self_charge"
    title = "Creators are never charged for their own videos."


class InvalidCursor(Unprocessable):
    code = "invalid_cursor"
    title = "The cursor is not valid; start again from the first page."


class InvalidIdentity(Unauthorized):
    code = "invalid_token"
    title = "The access token does not name a valid user."


class TransactionNotFound(NotFound):
    # Also what anyone gets for a transaction that is not on their own wallet.
    code = "transaction_not_found"
    title = "There is no transaction with this id on your wallet."


class ChargeNotFound(NotFound):
    code = "charge_not_found"
    title = "There is no charge with this id."


class RefundExceedsCharge(Conflict):
    # Extension "refundable": what is left to refund of the charge.
    code = "refund_exceeds_charge"
    title = "A charge can be refunded at most what was charged, less earlier refunds."


class PaymentProviderUnavailable(ServiceUnavailable):
    code = "payment_provider_unavailable"
    title = "The payment provider did not answer; nothing was charged. Retry with the same key."
