"""`streamify billing verify`: a JSON report of every ledger invariant, exit 0 when all hold, and
non-zero naming what broke when a row was tampered with behind the triggers' back (in a database
of the test's own, addressed the way the CLI finds the stack's database)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result

from common.db import asyncpg_dsn, drop_database, ensure_database
from common.migrations import upgrade
from services.billing.service import request_hash
from services.billing.verify import CHECKS, PLANNER_SETTINGS, verify_ledger
from streamify import stack
from streamify.cli import main
from tests.billing.conftest import BillingDriver
from tests.conftest import PG_BASE, REDIS_URL


class Stack:
    """A billing database under its own prefix, with a few real movements in it."""

    def __init__(self, env: dict[str, str], url: str) -> None:
        self.env = env
        self.url = url

    async def invoke(self) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, ["billing", "verify"], env=self.env)

    async def tamper(self, *statements: str, bypass_triggers: bool = True) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            async with connection.transaction():
                if bypass_triggers:
                    # Ordinary triggers do not fire for a replica: the write-once triggers are bypassed.
                    await connection.execute("SET LOCAL session_replication_role = replica")
                for statement in statements:
                    await connection.execute(statement)
        finally:
            await connection.close()


async def some_movements(url: str) -> None:
    """Two viewers top up, watch a creator's video, one charge is partly refunded."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    creator, video, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        for index in range(2):
            viewer = uuid.uuid4()
            await connection.execute(
                "SELECT billing_topup($1, $2, $3, 1000, 'USD', 'test_card', 'ref')",
                f"topup:{viewer}:1",
                request_hash("topup", index),
                viewer,
            )
            for unit in range(3):
                await connection.execute(
                    "SELECT billing_charge($1, $2, $3, $4, $5, $6, $7, 333, 2000, 'USD')",
                    f"{session}:{index * 3 + unit}",
                    request_hash("charge", index, unit),
                    viewer,
                    creator,
                    video,
                    session,
                    index * 3 + unit,
                )
        charge_id = await connection.fetchval("SELECT id FROM transactions WHERE kind = 'charge' LIMIT 1")
        await connection.execute(
            "SELECT billing_refund('refund:admin:1', $1, $2, 100, $3, 'test')",
            request_hash("refund"),
            charge_id,
            uuid.uuid4(),
        )
    finally:
        await connection.close()


@pytest.fixture
async def own_stack(tmp_path: Path, service_env: dict[str, str]) -> AsyncIterator[Stack]:
    prefix = f"streamify_billverify_{uuid.uuid4().hex[:8]}"
    url = stack.database_url(PG_BASE, f"{prefix}_billing")
    await ensure_database(url)
    try:
        await asyncio.to_thread(upgrade, "services.billing", url)
        await some_movements(url)
        # Every variable the command reads is named, so CliRunner restores all of them.
        env = {
            "STREAMIFY_DATABASE_URL": PG_BASE,
            "STREAMIFY_DB_PREFIX": prefix,
            "REDIS_URL": REDIS_URL,
            "STREAMIFY_DATA_DIR": str(tmp_path),
        }
        yield Stack(env, url)
    finally:
        await drop_database(url)


def report_of(result: Result) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(result.stdout)
    return report


class TestVerifyPasses:
    async def test_a_consistent_ledger_passes_with_a_summary(self, own_stack: Stack):
        result = await own_stack.invoke()
        assert result.exit_code == 0, result.output
        report = report_of(result)
        assert report["ok"] is True and report["violations"] == {}
        assert report["counts"] == {"accounts": 5, "entries": 25, "topups": 2, "charges": 6, "refunds": 1}
        assert report["totals"] == {
            "wallet": 2000 - 6 * 333 + 100,
            "creator": 6 * 267 - 81,
            "platform": 6 * 66 - 19,
            "external": -2000,
        }
        assert all(check["violations"] == 0 for check in report["checks"].values())
        assert "every invariant holds" in result.stderr

    async def test_the_test_runs_own_ledger_verifies(self, billing: BillingDriver):
        report = await verify_ledger(billing.settings.database_url)
        assert report.ok, report.violations


TAMPERING = {
    "an entry's amount edited": (
        ["UPDATE entries SET amount = amount + 1 WHERE id = (SELECT max(id) FROM entries)"],
        {"transactions_balanced", "entries_match_kind"},
    ),
    "an entry deleted": (
        [
            "DELETE FROM entries WHERE id = (SELECT min(e.id) FROM entries e"
            " JOIN accounts a ON a.id = e.account_id"
            " WHERE a.kind = 'platform')"
        ],
        {"transactions_balanced", "entries_match_kind"},
    ),
    "a fee split moved between creator and platform": (
        [
            "UPDATE entries SET amount = amount + 1 WHERE id = (SELECT min(e.id) FROM entries e"
            " JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'platform')",
            "UPDATE entries SET amount = amount - 1 WHERE id = (SELECT min(e.id) FROM entries e"
            " JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'creator')",
        ],
        {"entries_match_kind"},
    ),
    "a wallet balance edited": (
        [
            "UPDATE accounts SET balance = balance + 5"
            " WHERE id = (SELECT min(id) FROM accounts WHERE kind = 'wallet')"
        ],
        {"wallet_balances_match_entries"},
    ),
    "a running balance edited": (
        ["UPDATE entries SET balance_after = balance_after + 1 WHERE id = (SELECT min(id) FROM entries)"],
        {"running_balances_match"},
    ),
    "a creator's earnings paid out twice": (
        [
            "INSERT INTO transactions (id, kind, key, request_hash, currency, amount, viewer_id,"
            " payment_method,"
            " provider_reference) VALUES ('00000000-0000-4000-8000-000000000001', 'topup', 'forged', "
            " sha256('x'), 'USD', 5000, gen_random_uuid(), 'm', 'r')",
            "INSERT INTO entries (transaction_id, account_id, amount) SELECT"
            " '00000000-0000-4000-8000-000000000001', id, -5000 FROM accounts WHERE kind = 'creator'",
            "INSERT INTO entries (transaction_id, account_id, amount) SELECT"
            " '00000000-0000-4000-8000-000000000001', id, 5000 FROM accounts WHERE kind = 'external'",
        ],
        {"no_negative_balances", "entries_match_kind"},
    ),
    "a charge key used twice": (
        [
            "ALTER TABLE transactions DROP CONSTRAINT uq_transactions_key",
            "CREATE TEMP TABLE copy ON COMMIT DROP AS"
            " SELECT * FROM transactions WHERE kind = 'charge' LIMIT 1",
            "UPDATE copy SET id = gen_random_uuid()",
            "INSERT INTO transactions SELECT * FROM copy",
        ],
        {"unique_keys", "transactions_balanced"},
    ),
    "a refund larger than its charge": (
        [
            "INSERT INTO transactions (id, kind, key, request_hash, currency, amount, platform_fee,"
            " viewer_id,"
            " creator_id, video_id, session_id, unit, refund_of, actor_id)"
            " SELECT gen_random_uuid(), 'refund', 'refund:forged', sha256('y'), currency, amount,"
            " platform_fee,"
            " viewer_id, creator_id, video_id, session_id, unit, refund_of, actor_id FROM transactions"
            " WHERE kind = 'refund'",
        ],
        {"refunds_within_charges", "transactions_balanced"},
    ),
}


class TestVerifyFindsTampering:
    @pytest.mark.parametrize("case", TAMPERING, ids=list(TAMPERING))
    async def test_tampering_behind_the_triggers_back_fails_verify_naming_the_invariant(
        self, own_stack: Stack, case: str
    ):
        statements, broken = TAMPERING[case]
        await own_stack.tamper(*statements)

        result = await own_stack.invoke()

        assert result.exit_code == 1, result.output
        report = report_of(result)
        assert report["ok"] is False
        assert set(report["violations"]) == broken
        assert all(report["checks"][name]["examples"] for name in broken)
        assert "Ledger invariants violated:" in result.stderr
        assert all(name in result.stderr for name in broken)

    async def test_the_triggers_refuse_the_same_tampering_when_not_bypassed(self, own_stack: Stack):
        with pytest.raises(asyncpg.PostgresError, match="written once"):
            await own_stack.tamper(*TAMPERING["an entry's amount edited"][0], bypass_triggers=False)
        assert (await own_stack.invoke()).exit_code == 0


class TestVerifyErrors:
    async def test_a_missing_database_is_a_readable_error(self, tmp_path: Path, service_env: dict[str, str]):
        env = {
            "STREAMIFY_DATABASE_URL": PG_BASE,
            "STREAMIFY_DB_PREFIX": f"streamify_nothing_{uuid.uuid4().hex[:8]}",
            "REDIS_URL": REDIS_URL,
            "STREAMIFY_DATA_DIR": str(tmp_path),
        }
        result = await asyncio.to_thread(CliRunner().invoke, main, ["billing", "verify"], env=env)
        assert result.exit_code == 1
        assert "streamify migrate" in result.output and "Traceback" not in result.output


class TestVerifyPlans:
    async def test_every_check_reads_each_table_once_whatever_the_statistics_say(self, own_stack: Stack):
        """Fast-start nested loops, chosen for the examples' LIMIT on stale estimates, made verify
        quadratic: a healthy ledger of 81,000 transactions ran for over 8 minutes."""
        connection = await asyncpg.connect(asyncpg_dsn(own_stack.url))
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                for setting in PLANNER_SETTINGS:
                    await connection.execute(setting)
                for name, sql in CHECKS.items():
                    plan = "\n".join(
                        row[0] for row in await connection.fetch(f"EXPLAIN SELECT * FROM ({sql}) v LIMIT 5")
                    )
                    assert "Nested Loop" not in plan, f"{name}:\n{plan}"
        finally:
            await connection.close()
