"""Every billing query, on the ledger's asyncpg pool.

The pool runs in autocommit: each call below is one statement, so one round trip and its own
transaction. Every money movement is one call of a database function (migrations 0002, 0003),
which decides idempotency, funds and the entries atomically and writes the movement's event into
the outbox in the same transaction (the caller passes the event id); its refusals arrive as
:class:`LedgerRefusal` with billing's SQLSTATE. Reads are plain keyset/aggregate queries.

The pool hands connections back without asyncpg's default reset query (another round trip per
call): nothing here leaves session state behind (no SET, LISTEN, cursors or session-level
advisory locks; the refund's advisory lock is transaction-scoped).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# SQLSTATEs raised by the ledger functions (see migration 0002).
INSUFFICIENT_FUNDS = "SB402"
KEY_REUSED = "SB422"
CHARGE_NOT_FOUND = "SB404"
REFUND_EXCEEDS_CHARGE = "SB409"
LEDGER_STATES = frozenset({INSUFFICIENT_FUNDS, KEY_REUSED, CHARGE_NOT_FOUND, REFUND_EXCEEDS_CHARGE})
MAX_ENTRY_ID = 2**63 - 1


class LedgerRefusal(Exception):
    """A ledger function refused a movement; nothing was written."""

    def __init__(self, sqlstate: str, detail: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate
        self.detail = detail


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Replaces asyncpg's per-release reset query (see the module docstring)."""


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=_no_reset)
    return pool


async def _call(pool: asyncpg.Pool, sql: str, *args: Any) -> asyncpg.Record:
    try:
        return await pool.fetchrow(sql, *args)
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", None)
        if state in LEDGER_STATES:
            raise LedgerRefusal(state, getattr(exc, "detail", None)) from None
        raise


# --- money movements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeResult:
    transaction_id: uuid.UUID
    amount: int
    platform_fee: int
    balance: int
    created_at: datetime
    replayed: bool


async def ensure_account(pool: asyncpg.Pool, kind: str, owner: uuid.UUID | None, currency: str) -> None:
    """The account exists afterwards (created and committed now if it did not)."""
    await pool.fetchval("SELECT billing_account($1, $2, $3)", kind, owner, currency)


CHARGE_SQL = "SELECT * FROM billing_charge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


@dataclass(frozen=True, slots=True)
class LedgerCharge:
    """One unit to charge, as the ledger functions take it (the fee rate and currency apart)."""

    key: str
    request_hash: bytes
    viewer_id: uuid.UUID
    creator_id: uuid.UUID
    video_id: uuid.UUID
    session_id: uuid.UUID
    unit: int
    amount: int
    event_id: uuid.UUID


async def charge(pool: asyncpg.Pool, c: LedgerCharge, *, fee_bps: int, currency: str) -> ChargeResult:
    """A charge and its ``billing.unit_charged`` event (written only when the charge is new)."""
    row = await _call(
        pool,
        CHARGE_SQL,
        c.key,
        c.request_hash,
        c.viewer_id,
        c.creator_id,
        c.video_id,
        c.session_id,
        c.unit,
        c.amount,
        fee_bps,
        currency,
        c.event_id,
    )
    return ChargeResult(*row)


CHARGE_BATCH_SQL = """
    SELECT * FROM billing_charge_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ORDER BY item
"""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One charge of a batch: ``charged`` (``result`` set; a replay too), ``insufficient_funds``
    (``balance`` is the wallet's) or ``idempotency_key_reused``; only ``charged`` wrote anything."""

    outcome: str
    result: ChargeResult | None
    balance: int | None


async def charge_batch(
    pool: asyncpg.Pool, charges: list[LedgerCharge], *, fee_bps: int, currency: str
) -> list[BatchOutcome]:
    """Each charge as ``charge`` would make it, all in one statement and one commit; in order."""
    if not charges:
        return []
    rows = await pool.fetch(
        CHARGE_BATCH_SQL,
        [c.key for c in charges],
        [c.request_hash for c in charges],
        [c.viewer_id for c in charges],
        [c.creator_id for c in charges],
        [c.video_id for c in charges],
        [c.session_id for c in charges],
        [c.unit for c in charges],
        [c.amount for c in charges],
        fee_bps,
        currency,
        [c.event_id for c in charges],
    )
    outcomes = []
    for row in rows:
        charged = row["outcome"] == "charged"
        result = (
            ChargeResult(
                row["transaction_id"],
                row["amount"],
                row["platform_fee"],
                row["balance"],
                row["created_at"],
                row["replayed"],
            )
            if charged
            else None
        )
        outcomes.append(BatchOutcome(row["outcome"], result, row["balance"]))
    return outcomes


@dataclass(frozen=True, slots=True)
class TopupResult:
    transaction_id: uuid.UUID
    amount: int
    balance: int
    created_at: datetime
    replayed: bool


async def topup(
    pool: asyncpg.Pool,
    *,
    key: str,
    request_hash: bytes,
    user_id: uuid.UUID,
    amount: int,
    currency: str,
    payment_method: str,
    provider_reference: str,
    event_id: uuid.UUID,
) -> TopupResult:
    """A top-up and its ``billing.topup_succeeded`` event (written only when the top-up is new)."""
    row = await _call(
        pool,
        "SELECT * FROM billing_topup($1, $2, $3, $4, $5, $6, $7, $8)",
        key,
        request_hash,
        user_id,
        amount,
        currency,
        payment_method,
        provider_reference,
        event_id,
    )
    return TopupResult(*row)


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """The transaction a key already made, as its first response described it."""

    kind: str
    request_hash: bytes
    transaction_id: uuid.UUID
    amount: int
    balance_after: int
    created_at: datetime


async def stored_request(pool: asyncpg.Pool, key: str) -> StoredRequest | None:
    row = await pool.fetchrow(
        """
        SELECT t.kind, t.request_hash, t.id, t.amount, e.balance_after, t.created_at
          FROM transactions t
          JOIN entries e ON e.transaction_id = t.id AND e.balance_after IS NOT NULL
         WHERE t.key = $1
        """,
        key,
    )
    return StoredRequest(*row) if row is not None else None


@dataclass(frozen=True, slots=True)
class RefundResult:
    transaction_id: uuid.UUID
    refund_of: uuid.UUID
    amount: int
    platform_fee: int
    balance: int
    created_at: datetime
    replayed: bool


async def refund(
    pool: asyncpg.Pool,
    *,
    key: str,
    request_hash: bytes,
    charge_id: uuid.UUID,
    amount: int | None,
    actor_id: uuid.UUID,
    reason: str | None,
    event_id: uuid.UUID,
) -> RefundResult:
    """A refund and its ``billing.refund_issued`` event (written only when the refund is new)."""
    row = await _call(
        pool,
        "SELECT * FROM billing_refund($1, $2, $3, $4, $5, $6, $7)",
        key,
        request_hash,
        charge_id,
        amount,
        actor_id,
        reason,
        event_id,
    )
    return RefundResult(*row)


# --- reads -------------------------------------------------------------------------------------


async def wallet_balance(pool: asyncpg.Pool, user_id: uuid.UUID, currency: str) -> int:
    """The wallet's maintained balance; 0 for a user who never topped up."""
    balance = await pool.fetchval(
        "SELECT balance FROM accounts WHERE kind = 'wallet' AND owner_id = $1 AND currency = $2",
        user_id,
        currency,
    )
    return int(balance) if balance is not None else 0


@dataclass(frozen=True, slots=True)
class StatementLine:
    entry_id: int
    transaction_id: uuid.UUID
    kind: str
    amount: int
    balance_after: int
    currency: str
    created_at: datetime
    video_id: uuid.UUID | None
    session_id: uuid.UUID | None
    unit: int | None
    refund_of: uuid.UUID | None


_STATEMENT = """
    SELECT e.id, t.id, t.kind, e.amount, e.balance_after, t.currency, t.created_at,
           t.video_id, t.session_id, t.unit, t.refund_of
      FROM accounts a
      JOIN entries e ON e.account_id = a.id
      JOIN transactions t ON t.id = e.transaction_id
     WHERE a.kind = 'wallet' AND a.owner_id = $1 AND a.currency = $2
"""


async def wallet_statement(
    pool: asyncpg.Pool, user_id: uuid.UUID, currency: str, *, before_entry: int | None, limit: int
) -> list[StatementLine]:
    """The wallet's lines, newest first, older than ``before_entry`` (keyset on the entry id)."""
    rows = await pool.fetch(
        _STATEMENT + " AND e.id < $3 ORDER BY e.id DESC LIMIT $4",
        user_id,
        currency,
        before_entry if before_entry is not None else MAX_ENTRY_ID,
        limit,
    )
    return [StatementLine(*row) for row in rows]


async def wallet_line(
    pool: asyncpg.Pool, user_id: uuid.UUID, currency: str, transaction_id: uuid.UUID
) -> StatementLine | None:
    """One transaction as a line of this user's statement; None when it is not on their wallet."""
    row = await pool.fetchrow(_STATEMENT + " AND e.transaction_id = $3", user_id, currency, transaction_id)
    return StatementLine(*row) if row is not None else None


@dataclass(frozen=True, slots=True)
class VideoEarning:
    video_id: uuid.UUID
    amount: int
    charges: int


async def creator_earnings(pool: asyncpg.Pool, creator_id: uuid.UUID, currency: str) -> list[VideoEarning]:
    """The creator account's entries summed per video (biggest first); their total is its balance."""
    rows = await pool.fetch(
        """
        SELECT t.video_id, sum(e.amount)::bigint AS amount,
               count(*) FILTER (WHERE t.kind = 'charge') AS charges
          FROM accounts a
          JOIN entries e ON e.account_id = a.id
          JOIN transactions t ON t.id = e.transaction_id
         WHERE a.kind = 'creator' AND a.owner_id = $1 AND a.currency = $2
         GROUP BY t.video_id
         ORDER BY amount DESC, t.video_id
        """,
        creator_id,
        currency,
    )
    return [VideoEarning(*row) for row in rows]
