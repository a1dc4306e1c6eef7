"""Billing rules: charges, top-ups, refunds, statements and earnings. No HTTP here.

Fee split (SPEC §4). A charge of ``amount`` cents with the fee rate ``bps`` in force
(``BILLING_PLATFORM_FEE_BPS``, default 2000 = 20 %) splits into

    platform_fee  = floor(amount * bps / 10000)
    creator_share = amount - platform_fee

so any fraction of a cent goes to the creator (a 1-cent charge is all the creator's; 333 cents at
20 % is 66 to the platform, 267 to the creator). The rate is recorded on every charge, so changing
it affects new charges only. A refund of ``r`` cents of a charge of which ``R`` cents were refunded
before gives back ``floor((R + r) * fee / amount) - floor(R * fee / amount)`` of the platform's
fee and the rest of ``r`` from the creator's share: the parts of all refunds of a charge add up
exactly to the charge's parts once it is fully refunded, and never exceed them before.

Idempotency. A charge's key is ``"<session_id>:<unit>"``; a top-up's and a refund's key is the
client's ``Idempotency-Key`` scoped to its user (``topup:<user>:<key>``, ``refund:<admin>:<key>``).
Every transaction stores the sha256 of its request's canonical body: the same key with the same
body gets the first result again (``replayed``), with a different body 422. Keys are decided by
the database's unique index, so concurrent duplicates make one transaction.

Events. Each ledger function writes its movement's event into the outbox (common.outbox) in the
same statement, so a movement never commits without its event and a crash cannot lose one; the
relay puts them on the stream. Ids derive from the facts (the charge key, the ledger key of a
top-up or refund), and a replayed request writes none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog

from common.errors import AppError
from common.events import event_id
from common.outbox import OutboxRelay
from common.tokens import Identity
from services.billing import metrics
from services.billing import repository as repo
from services.billing.errors import (
    AmountOutOfRange,
    ChargeNotFound,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidChargeKey,
    InvalidCursor,
    InvalidIdempotencyKey,
    InvalidIdentity,
    InvalidPaymentMethod,
    PaymentDeclined,
    PaymentProviderUnavailable,
    RefundExceedsCharge,
    SelfCharge,
    TransactionNotFound,
    UnsupportedCurrency,
)
from services.billing.models import BPS_DENOMINATOR, TransactionKind
from services.billing.payments import (
    PaymentProvider,
    PaymentProviderError,
    PaymentRequest,
    UnsupportedPaymentMethod,
)
from services.billing.schemas import ChargeCreate, RefundCreate, TopupCreate
from services.billing.settings import BillingSettings

log = structlog.get_logger("billing")
IDEMPOTENCY_KEY_MAX = 200


@dataclass(frozen=True, slots=True)
class Billing:
    """What billing works with, built once by the app's lifespan."""

    ledger: asyncpg.Pool
    # Woken after each new movement, so its event leaves at once rather than at the next poll.
    outbox: OutboxRelay
    provider: PaymentProvider
    settings: BillingSettings
    # Earnings accounts known to exist (accounts are never deleted), so charges need not ask.
    known_accounts: set[tuple[str, uuid.UUID | None]] = field(default_factory=set)


# Plenty for every active creator; past it the set starts over (a miss costs one query).
KNOWN_ACCOUNTS_MAX = 100_000


async def _ensure_accounts(billing: Billing, creators: list[uuid.UUID]) -> None:
    """Create the creators' (and the platform's) accounts a charge is about to credit, if new.

    Each is created in its own short transaction before the charge, never inside it: two batches
    creating the same new accounts in different orders while holding wallet locks would deadlock.
    """
    wanted = [("platform", None), *(("creator", creator) for creator in sorted(set(creators)))]
    missing = [account for account in wanted if account not in billing.known_accounts]
    if not missing:
        return
    if len(billing.known_accounts) + len(missing) > KNOWN_ACCOUNTS_MAX:
        billing.known_accounts.clear()
    for kind, owner in missing:
        await repo.ensure_account(billing.ledger, kind, owner, billing.settings.currency)
        billing.known_accounts.add((kind, owner))


def split_charge(amount: int, fee_bps: int) -> tuple[int, int]:
    """(creator_share, platform_fee) of a charge; the fee rounds down (see the module docstring)."""
    fee = amount * fee_bps // BPS_DENOMINATOR
    return amount - fee, fee


def request_hash(kind: str, *values: Any) -> bytes:
    """sha256 of a request's canonical form (its kind and its values, in a fixed order)."""
    return hashlib.sha256(orjson.dumps([kind, *values])).digest()


def user_uuid(identity: Identity) -> uuid.UUID:
    try:
        return uuid.UUID(identity.user_id)
    except ValueError as exc:
        raise InvalidIdentity() from exc


def scoped_key(kind: str, owner: uuid.UUID, idempotency_key: str | None) -> str:
    """The ledger key of a client's request: its Idempotency-Key within its own namespace."""
    if idempotency_key is None:
        return f"{kind}:{owner}:{uuid.uuid4().hex}"
    if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX or not all(
        "!" <= char <= "~" for char in idempotency_key
    ):
        raise InvalidIdempotencyKey()
    return f"{kind}:{owner}:{idempotency_key}"


# --- charges (internal, streaming) -------------------------------------------------------------


def _ledger_charge(settings: BillingSettings, data: ChargeCreate) -> repo.LedgerCharge:
    """The charge as the ledger takes it, once its terms are checked (the key is its session and
    unit, the currency billing's, the viewer not the creator)."""
    if data.key != f"{data.session_id}:{data.unit}":
        raise InvalidChargeKey()
    if data.currency != settings.currency:
        raise UnsupportedCurrency(f"Billing charges in {settings.currency} only.")
    if data.viewer_id == data.creator_id:
        raise SelfCharge()
    digest = request_hash(
        "charge",
        data.key,
        data.session_id,
        data.unit,
        data.viewer_id,
        data.creator_id,
        data.video_id,
        data.amount,
        data.currency,
    )
    return repo.LedgerCharge(
        key=data.key,
        request_hash=digest,
        viewer_id=data.viewer_id,
        creator_id=data.creator_id,
        video_id=data.video_id,
        session_id=data.session_id,
        unit=data.unit,
        amount=data.amount,
        event_id=event_id("billing.unit_charged", data.key),
    )


def _insufficient(data: ChargeCreate, balance: str | int | None) -> InsufficientFunds:
    metrics.count_wallet_decline(data.currency)
    return InsufficientFunds(balance=int(balance or 0), amount=data.amount, currency=data.currency)


def _count(data: ChargeCreate, result: repo.ChargeResult) -> repo.ChargeResult:
    metrics.count_charge(
        data.currency, amount=result.amount, platform_fee=result.platform_fee, replayed=result.replayed
    )
    return result


async def charge_unit(billing: Billing, data: ChargeCreate) -> repo.ChargeResult:
    """Debit the viewer, credit the creator's share and the platform's fee, in one transaction."""
    settings = billing.settings
    charge = _ledger_charge(settings, data)
    await _ensure_accounts(billing, [charge.creator_id])
    try:
        result = await repo.charge(
            billing.ledger, charge, fee_bps=settings.platform_fee_bps, currency=settings.currency
        )
    except repo.LedgerRefusal as refusal:
        if refusal.sqlstate == repo.INSUFFICIENT_FUNDS:
            raise _insufficient(data, refusal.detail) from None
        if refusal.sqlstate == repo.KEY_REUSED:
            raise IdempotencyKeyReused() from None
        raise
    if not result.replayed:
        billing.outbox.wake()
    return _count(data, result)


async def charge_units(billing: Billing, charges: list[ChargeCreate]) -> list[repo.ChargeResult | AppError]:
    """Each charge exactly as ``charge_unit`` would answer it, all in one database call and one
    commit (group commit: what streaming sends when many sessions are due at once). The answers
    are in the order given; a refused charge's answer is its error, and it wrote nothing."""
    settings = billing.settings
    answers: list[repo.ChargeResult | AppError | None] = [None] * len(charges)
    batch: list[repo.LedgerCharge] = []
    positions: list[int] = []
    for position, data in enumerate(charges):
        try:
            batch.append(_ledger_charge(settings, data))
        except AppError as exc:
            answers[position] = exc
            continue
        positions.append(position)
    await _ensure_accounts(billing, [charge.creator_id for charge in batch])
    outcomes = await repo.charge_batch(
        billing.ledger, batch, fee_bps=settings.platform_fee_bps, currency=settings.currency
    )
    wrote = False
    for position, outcome in zip(positions, outcomes, strict=True):
        data = charges[position]
        if outcome.result is not None:
            answers[position] = _count(data, outcome.result)
            wrote = wrote or not outcome.result.replayed
        elif outcome.outcome == "insufficient_funds":
            answers[position] = _insufficient(data, outcome.balance)
        else:
            answers[position] = IdempotencyKeyReused()
    if wrote:
        billing.outbox.wake()
    return [answer for answer in answers if answer is not None]


# --- top-ups -----------------------------------------------------------------------------------


async def top_up(
    billing: Billing, data: TopupCreate, *, identity: Identity, idempotency_key: str | None
) -> repo.TopupResult:
    """Take ``amount`` from the payment method through the provider, then credit the wallet.

    A key seen before answers from the ledger without asking the provider again. Parallel
    requests with one key may both ask the provider (which is given the key, so it takes the money
    once) and then meet at the ledger's unique key: one top-up.
    """
    settings, provider = billing.settings, billing.provider
    user_id = user_uuid(identity)
    key = scoped_key("topup", user_id, idempotency_key)
    if not settings.topup_min <= data.amount <= settings.topup_max:
        raise AmountOutOfRange(
            f"A top-up is between {settings.topup_min} and {settings.topup_max} cents.",
            minimum=settings.topup_min,
            maximum=settings.topup_max,
        )
    digest = request_hash("topup", data.amount, data.payment_method, settings.currency)
    stored = await repo.stored_request(billing.ledger, key)
    if stored is not None:
        if stored.kind != TransactionKind.topup or stored.request_hash != digest:
            raise IdempotencyKeyReused()
        result = repo.TopupResult(
            stored.transaction_id, stored.amount, stored.balance_after, stored.created_at, True
        )
    else:
        payment = PaymentRequest(
            amount=data.amount,
            currency=settings.currency,
            payment_method=data.payment_method,
            idempotency_key=key,
            user_id=user_id,
        )
        try:
            async with asyncio.timeout(settings.payment_timeout_s):
                outcome = await provider.charge(payment)
        except UnsupportedPaymentMethod as exc:
            metrics.count_topup("invalid_payment_method")
            raise InvalidPaymentMethod(str(exc)) from None
        except (PaymentProviderError, TimeoutError) as exc:
            log.warning("payment_provider_failed", provider=provider.name, error=repr(exc))
            metrics.count_topup("provider_error")
            raise PaymentProviderUnavailable() from None
        if not outcome.approved:
            log.info("topup_declined", provider=provider.name, decline_code=outcome.decline_code)
            metrics.count_topup("declined")
            raise PaymentDeclined(decline_code=outcome.decline_code or "declined")
        try:
            result = await repo.topup(
                billing.ledger,
                key=key,
                request_hash=digest,
                user_id=user_id,
                amount=data.amount,
                currency=settings.currency,
                payment_method=data.payment_method,
                provider_reference=outcome.reference,
                event_id=event_id("billing.topup_succeeded", key),
            )
        except repo.LedgerRefusal as refusal:
            if refusal.sqlstate == repo.KEY_REUSED:
                raise IdempotencyKeyReused() from None
            raise
        billing.outbox.wake()
    metrics.count_topup(
        "replayed" if result.replayed else "succeeded", currency=settings.currency, amount=result.amount
    )
    return result


# --- refunds -----------------------------------------------------------------------------------


async def refund_charge(
    billing: Billing, data: RefundCreate, *, admin: Identity, idempotency_key: str | None
) -> repo.RefundResult:
    """A reversing transaction for all or part of a charge (never more than is left of it)."""
    actor_id = user_uuid(admin)
    key = scoped_key("refund", actor_id, idempotency_key)
    digest = request_hash("refund", data.transaction_id, data.amount, data.reason)
    try:
        result = await repo.refund(
            billing.ledger,
            key=key,
            request_hash=digest,
            charge_id=data.transaction_id,
            amount=data.amount,
            actor_id=actor_id,
            reason=data.reason,
            event_id=event_id("billing.refund_issued", key),
        )
    except repo.LedgerRefusal as refusal:
        if refusal.sqlstate == repo.KEY_REUSED:
            raise IdempotencyKeyReused() from None
        if refusal.sqlstate == repo.CHARGE_NOT_FOUND:
            raise ChargeNotFound() from None
        if refusal.sqlstate == repo.REFUND_EXCEEDS_CHARGE:
            raise RefundExceedsCharge(refundable=int(refusal.detail or 0)) from None
        raise
    if not result.replayed:
        billing.outbox.wake()
    metrics.count_refund(billing.settings.currency, amount=result.amount, replayed=result.replayed)
    return result


# --- reads -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatementPage:
    items: list[repo.StatementLine]
    next_cursor: str | None


_CURSOR_PREFIX = "w1:"


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{entry_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int:
    """The entry id a page ends at; InvalidCursor when the cursor was not made here."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor() from exc
    number = text.removeprefix(_CURSOR_PREFIX)
    if number == text or not number.isdigit() or len(number) > 19:
        raise InvalidCursor()
    return int(number)


async def wallet_balance(billing: Billing, user_id: uuid.UUID) -> int:
    return await repo.wallet_balance(billing.ledger, user_id, billing.settings.currency)


async def wallet_statement(
    billing: Billing, *, identity: Identity, cursor: str | None, limit: int
) -> StatementPage:
    """The caller's own wallet transactions, newest first."""
    before = decode_cursor(cursor) if cursor else None
    lines = await repo.wallet_statement(
        billing.ledger, user_uuid(identity), billing.settings.currency, before_entry=before, limit=limit + 1
    )
    more = len(lines) > limit
    lines = lines[:limit]
    return StatementPage(items=lines, next_cursor=encode_cursor(lines[-1].entry_id) if more else None)


async def wallet_transaction(
    billing: Billing, transaction_id: uuid.UUID, *, identity: Identity
) -> repo.StatementLine:
    """One transaction of the caller's own wallet; anyone else's is 'not found'."""
    line = await repo.wallet_line(
        billing.ledger, user_uuid(identity), billing.settings.currency, transaction_id
    )
    if line is None:
        raise TransactionNotFound()
    return line


async def earnings(billing: Billing, *, identity: Identity) -> tuple[int, list[repo.VideoEarning]]:
    """The caller's own earnings: the total (their creator account's balance) and per video."""
    videos = await repo.creator_earnings(billing.ledger, user_uuid(identity), billing.settings.currency)
    return sum(video.amount for video in videos), videos
