"""Billing tables: a double-entry ledger of integer cents.

- ``accounts``: one per viewer wallet, per creator's earnings, and one platform revenue and one
  external funding account per currency (the funding account is the other side of every top-up,
  so its entry sum is minus all the money that ever came in, negative by design).
- ``transactions``: one per money movement (``topup``, ``charge``, ``refund``), with its unique
  key (the charge key ``session:unit``, or the caller's Idempotency-Key scoped to its user), the
  hash of the request that made it, and what it was for (viewer, creator, video, session, unit).
- ``entries``: signed amounts, one per account a transaction touches; every transaction's entries
  sum to zero.

Transactions and entries are written once: triggers (migration 0002) refuse UPDATE, DELETE and
TRUNCATE; a correction is a new, reversing transaction (a refund).

Balances. A wallet's balance is *maintained* on its account row (``accounts.balance``) and
checked ``>= 0`` by the database: that row is what a charge must lock to decide whether the viewer
can pay, and the only row a charge updates. Every other account's balance is the sum of its
entries (indexed, index-only), never a stored counter: every charge credits the platform and a
popular creator, and a counter row there would serialise every charge in the system behind one
row lock. Each wallet entry also records the wallet's ``balance_after``, so its whole history is a
running balance that ``verify`` can check entry by entry.

No foreign key runs from ``entries.account_id`` to ``accounts``: the key check would take a
KEY SHARE lock on the platform and creator rows for every charge, turning them back into shared
hot rows (MultiXact churn). The functions that write the ledger look the accounts up, and
``verify`` checks that every entry names an account.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlmodel import Field, SQLModel

from common.columns import one_of, utcnow
from common.db import table_registry
from common.outbox import outbox_table


class BillingTable(SQLModel, registry=table_registry()):
    """Base of every billing table: its own registry, so its metadata holds only billing's tables."""


metadata = BillingTable.metadata


class AccountKind(StrEnum):
    wallet = "wallet"  # a user's prepaid balance (owner = the user)
    creator = "creator"  # a creator's earnings (owner = the creator)
    platform = "platform"  # the platform's fees, one per currency
    external = "external"  # money from outside (payment providers), one per currency


class TransactionKind(StrEnum):
    topup = "topup"
    charge = "charge"
    refund = "refund"


# Limits shared by the schemas (which explain them to clients) and the CHECK constraints.
KEY_MAX = 300
REASON_MAX = 500
PAYMENT_METHOD_MAX = 100
REFERENCE_MAX = 200
# One charge is one unit of one video: the catalog caps price_per_minute at 10,000 cents; this is a
# generous ceiling that still stops a typo from moving absurd sums.
CHARGE_MAX = 1_000_000
# Charges per call of billing_charge_batch (migration 0004 explains the bound).
CHARGE_BATCH_MAX = 50
BPS_DENOMINATOR = 10_000


class Account(BillingTable, table=True):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(one_of("kind", AccountKind), name="kind"),
        # Users own wallets and earnings; the platform and external accounts belong to no one.
        CheckConstraint("(kind IN ('wallet', 'creator')) = (owner_id IS NOT NULL)", name="owner"),
        # Only wallets keep a maintained balance (see the module docstring), and never below zero.
        CheckConstraint("(kind = 'wallet') = (balance IS NOT NULL)", name="maintained_balance"),
        CheckConstraint("balance >= 0", name="balance_non_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        UniqueConstraint("kind", "owner_id", "currency", postgresql_nulls_not_distinct=True),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    kind: str
    owner_id: uuid.UUID | None = None
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    balance: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class LedgerTransaction(BillingTable, table=True):
    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint(one_of("kind", TransactionKind), name="kind"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint(f"char_length(key) BETWEEN 1 AND {KEY_MAX}", name="key_length"),
        CheckConstraint("octet_length(request_hash) = 32", name="request_hash_length"),
        CheckConstraint("platform_fee BETWEEN 0 AND amount", name="platform_fee"),
        CheckConstraint(f"fee_bps BETWEEN 0 AND {BPS_DENOMINATOR}", name="fee_bps"),
        CheckConstraint("unit >= 0", name="unit_non_negative"),
        # What each kind must say about itself.
        CheckConstraint(
            "kind <> 'charge' OR (creator_id IS NOT NULL AND video_id IS NOT NULL AND session_id IS NOT NULL"
            " AND unit IS NOT NULL AND platform_fee IS NOT NULL AND fee_bps IS NOT NULL"
            " AND refund_of IS NULL)",
            name="charge_fields",
        ),
        CheckConstraint(
            "kind <> 'refund' OR (refund_of IS NOT NULL AND platform_fee IS NOT NULL"
            " AND creator_id IS NOT NULL AND actor_id IS NOT NULL)",
            name="refund_fields",
        ),
        CheckConstraint(
            "kind <> 'topup' OR (provider_reference IS NOT NULL AND payment_method IS NOT NULL"
            " AND platform_fee IS NULL AND refund_of IS NULL)",
            name="topup_fields",
        ),
        CheckConstraint(f"char_length(reason) <= {REASON_MAX}", name="reason_length"),
        UniqueConstraint("key"),
        Index("ix_transactions_refund_of", "refund_of", postgresql_where=text("refund_of IS NOT NULL")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str
    # The charge key ("<session>:<unit>"), or "topup:<user>:<Idempotency-Key>" and
    # "refund:<admin>:<Idempotency-Key>"; unique, so a retried request finds the first one.
    key: str
    # sha256 of the request's canonical body: the same key with a different body is refused.
    request_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Charges and refunds: the platform's part of ``amount`` (the creator's is the rest).
    platform_fee: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Charges: the fee rate in force when it was made (fee = floor(amount * fee_bps / 10000)).
    fee_bps: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # The wallet owner: the viewer charged or refunded, the user who topped up.
    viewer_id: uuid.UUID
    creator_id: uuid.UUID | None = None
    video_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    unit: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    refund_of: uuid.UUID | None = Field(
        default=None, sa_column=Column(Uuid, ForeignKey("transactions.id"), nullable=True)
    )
    # The admin who issued a refund.
    actor_id: uuid.UUID | None = None
    reason: str | None = None
    payment_method: str | None = None
    provider_reference: str | None = None
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class Entry(BillingTable, table=True):
    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
        # An account's entries in order: its statement (keyset pages, newest first) and its
        # balance (index-only sum over ``amount``).
        Index("ix_entries_account_id_id", "account_id", "id", postgresql_include=["amount"]),
        # The wallet entry of a transaction (a replayed response, one statement line).
        Index(
            "ix_entries_wallet_transaction",
            "transaction_id",
            postgresql_where=text("balance_after IS NOT NULL"),
        ),
    )

    # Ascending in commit order per wallet: a wallet's entries are written under its row lock.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    transaction_id: uuid.UUID = Field(sa_column=Column(Uuid, ForeignKey("transactions.id"), nullable=False))
    # No foreign key on purpose (see the module docstring).
    account_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Wallet entries: the wallet's balance right after this entry.
    balance_after: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


# Events waiting for the relay; written by the ledger functions (migration 0003).
event_outbox = outbox_table(metadata)
