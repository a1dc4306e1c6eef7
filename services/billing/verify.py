"""``verify_ledger``: check every invariant of the ledger, from the rows themselves.

The database already refuses most broken states (write-once triggers, CHECK constraints, the
unique key, the functions that write the ledger); this re-derives everything from the rows, so a
bug, a manual fix that bypassed the triggers, or a restored backup cannot go unnoticed. All checks
read one snapshot (REPEATABLE READ, read only), so they agree with each other while charges keep
landing. ``streamify billing verify`` prints the report as JSON and exits non-zero on a violation.

Checks (each reports how many rows break it and a few examples):

- ``transactions_balanced``: every transaction has entries, and they sum to zero.
- ``entries_reference_known_rows``: every entry names an existing account and transaction.
- ``wallet_balances_match_entries``: each wallet's maintained balance equals the sum of its entries.
- ``running_balances_match``: each wallet entry's ``balance_after`` is the sum of the wallet's
  entries up to it (the wallet's whole history, not only its end).
- ``no_negative_balances``: no wallet, creator or platform account below zero (the external
  funding account is the contra side of every top-up: negative by design).
- ``unique_keys``: no charge (or idempotency) key used twice.
- ``entries_match_kind``: a charge is exactly three entries, the viewer's wallet ``-amount``, the
  creator's account ``amount - fee`` and the platform ``fee``, with ``fee = floor(amount *
  fee_bps / 10000)``; a top-up is the user's wallet ``+amount`` and the external account
  ``-amount``; a refund is the viewer's wallet ``+amount``, the creator ``-(amount - fee part)``,
  the platform ``-fee part``; all in the transaction's currency.
- ``refunds_within_charges``: a charge's refunds add up to no more than it, come from the same
  viewer and creator, and their fee parts follow the cumulative rounding (service.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from common.db import asyncpg_dsn

EXAMPLES = 5

# Every check reads whole tables. With ``LIMIT`` (the examples) and row estimates that lag behind
# a busy ledger, the planner picks "fast start" nested loops over a sequential scan: quadratic, and
# on a healthy ledger (no violation to stop early at) it never finishes — 81,000 transactions ran
# for over 8 minutes. Hash joins and aggregates read each table once, whatever the estimates.
PLANNER_SETTINGS = ("SET LOCAL enable_nestloop = off",)

CHECKS: dict[str, str] = {
    "transactions_balanced": """
        SELECT t.id::text AS transaction_id, t.kind, coalesce(sum(e.amount), 0) AS total,
               count(e.id) AS entries
          FROM transactions t LEFT JOIN entries e ON e.transaction_id = t.id
         GROUP BY t.id
        HAVING count(e.id) = 0 OR coalesce(sum(e.amount), 0) <> 0
    """,
    "entries_reference_known_rows": """
        SELECT e.id AS entry_id, e.account_id, e.transaction_id::text AS transaction_id
          FROM entries e
          LEFT JOIN accounts a ON a.id = e.account_id
          LEFT JOIN transactions t ON t.id = e.transaction_id
         WHERE a.id IS NULL OR t.id IS NULL
    """,
    "wallet_balances_match_entries": """
        SELECT a.id AS account_id, a.owner_id::text AS user_id, a.balance,
               coalesce(s.total, 0) AS entries_sum
          FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id) s
            ON s.account_id = a.id
         WHERE a.kind = 'wallet' AND a.balance IS DISTINCT FROM coalesce(s.total, 0)
    """,
    "running_balances_match": """
        SELECT entry_id, account_id, balance_after, running
          FROM (SELECT e.id AS entry_id, e.account_id, e.balance_after,
                       sum(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.id) AS running,
                       a.kind
                  FROM entries e JOIN accounts a ON a.id = e.account_id) x
         WHERE (kind = 'wallet' AND balance_after IS DISTINCT FROM running)
            OR (kind <> 'wallet' AND balance_after IS NOT NULL)
    """,
    "no_negative_balances": """
        SELECT a.id AS account_id, a.kind, a.owner_id::text AS owner_id, a.balance,
               coalesce(s.total, 0) AS entries_sum
          FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id) s
            ON s.account_id = a.id
         WHERE a.kind <> 'external' AND (coalesce(s.total, 0) < 0 OR a.balance < 0)
    """,
    "unique_keys": """
        SELECT key, count(*) AS transactions FROM transactions GROUP BY key HAVING count(*) > 1
    """,
    "entries_match_kind": """
        SELECT t.id::text AS transaction_id, t.kind, count(*) AS entries
          FROM transactions t
          JOIN entries e ON e.transaction_id = t.id
          JOIN accounts a ON a.id = e.account_id
         GROUP BY t.id
        HAVING NOT coalesce(bool_and(a.currency = t.currency), false)
            OR NOT coalesce(CASE t.kind
              WHEN 'charge' THEN
                count(*) = 3
                AND t.platform_fee = t.amount * t.fee_bps / 10000
                AND count(*) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = -t.amount
                AND count(*) FILTER (WHERE a.kind = 'creator' AND a.owner_id = t.creator_id) = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'creator' AND a.owner_id = t.creator_id)
                    = t.amount - t.platform_fee
                AND count(*) FILTER (WHERE a.kind = 'platform') = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'platform') = t.platform_fee
              WHEN 'topup' THEN
                count(*) = 2
                AND count(*) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = t.amount
                AND count(*) FILTER (WHERE a.kind = 'external') = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'external') = -t.amount
              WHEN 'refund' THEN
                count(*) = 3
                AND count(*) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'wallet' AND a.owner_id = t.viewer_id) = t.amount
                AND count(*) FILTER (WHERE a.kind = 'creator' AND a.owner_id = t.creator_id) = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'creator' AND a.owner_id = t.creator_id)
                    = -(t.amount - t.platform_fee)
                AND count(*) FILTER (WHERE a.kind = 'platform') = 1
                AND sum(e.amount) FILTER (WHERE a.kind = 'platform') = -t.platform_fee
              ELSE false
            END, false)
    """,
    "refunds_within_charges": """
        SELECT c.id::text AS charge_id, c.amount AS charged, sum(r.amount) AS refunded
          FROM transactions c JOIN transactions r ON r.refund_of = c.id
         GROUP BY c.id
        HAVING c.kind <> 'charge'
            OR sum(r.amount) > c.amount
            OR sum(r.platform_fee) <> sum(r.amount)::bigint * c.platform_fee / c.amount
            OR bool_or(r.kind <> 'refund' OR r.viewer_id <> c.viewer_id OR r.creator_id <> c.creator_id
                       OR r.currency <> c.currency)
    """,
}

SUMMARY = """
    SELECT (SELECT count(*) FROM accounts) AS accounts,
           (SELECT count(*) FROM entries) AS entries,
           (SELECT count(*) FROM transactions WHERE kind = 'topup') AS topups,
           (SELECT count(*) FROM transactions WHERE kind = 'charge') AS charges,
           (SELECT count(*) FROM transactions WHERE kind = 'refund') AS refunds
"""

TOTALS = """
    SELECT a.kind, coalesce(sum(e.amount), 0)::bigint AS total
      FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
     GROUP BY a.kind
"""


@dataclass
class CheckResult:
    violations: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LedgerReport:
    counts: dict[str, int]
    # Sum of entries per account kind (wallets, creators, platform; external is minus all top-ups).
    totals: dict[str, int]
    checks: dict[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.violations == 0 for check in self.checks.values())

    @property
    def violations(self) -> dict[str, int]:
        return {name: check.violations for name, check in self.checks.items() if check.violations}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "totals": self.totals,
            "violations": self.violations,
            "checks": {
                name: {"violations": check.violations, "examples": check.examples}
                for name, check in self.checks.items()
            },
        }


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | str | float | bool) or value is None else str(value)


async def check_ledger(connection: asyncpg.Connection) -> LedgerReport:
    """Every check, in one read-only snapshot of ``connection``'s database."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        for setting in PLANNER_SETTINGS:
            await connection.execute(setting)
        summary = await connection.fetchrow(SUMMARY)
        totals = {str(row["kind"]): int(row["total"]) for row in await connection.fetch(TOTALS)}
        checks: dict[str, CheckResult] = {}
        for name, sql in CHECKS.items():
            # The queries are this module's constants; nothing in them comes from outside.
            rows = await connection.fetch(f"SELECT * FROM ({sql}) v LIMIT {EXAMPLES}")  # noqa: S608
            count = len(rows)
            if count == EXAMPLES:
                count = int(await connection.fetchval(f"SELECT count(*) FROM ({sql}) v"))  # noqa: S608
            checks[name] = CheckResult(
                violations=count,
                examples=[{key: _plain(value) for key, value in row.items()} for row in rows],
            )
    return LedgerReport(
        counts={key: int(value) for key, value in summary.items()}, totals=totals, checks=checks
    )


async def verify_ledger(database_url: str) -> LedgerReport:
    """Check the billing database at ``database_url`` (a SQLAlchemy or libpq URL)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await check_ledger(connection)
    finally:
        await connection.close()
