"""The hand-written migration builds exactly the models' schema, and the database itself holds the
ledger's rules whatever code writes to it: written rows never change, a wallet never goes below
zero, a key is used once, a transaction kind carries what it must."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI

from common.db import asyncpg_dsn, drop_database, ensure_database
from common.migrations import downgrade, upgrade
from services.billing.models import metadata
from tests.billing.conftest import BillingDriver, charge_body
from tests.conftest import test_database_url as database_url_for

HASH = hashlib.sha256(b"request").digest()


class TestSchema:
    async def test_the_migrated_database_matches_the_models(self, billing_app: FastAPI):
        def compare(connection) -> list:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)

        async with billing_app.state.engine.connect() as connection:
            assert await connection.run_sync(compare) == []

    async def test_constraints_and_indexes_carry_the_models_names(self, billing: BillingDriver):
        expected = {str(c.name) for table in metadata.sorted_tables for c in table.constraints} | {
            str(i.name) for table in metadata.sorted_tables for i in table.indexes
        }
        constraints = await billing.pool.fetch(
            "SELECT conname AS name FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )
        indexes = await billing.pool.fetch(
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
        )
        actual = {row["name"] for row in [*constraints, *indexes] if not row["name"].startswith("alembic")}
        assert actual == expected

    async def test_downgrade_and_upgrade_again(self, service_env):
        url = database_url_for("billing_roundtrip")
        await drop_database(url)
        await ensure_database(url)
        try:
            await asyncio.to_thread(upgrade, "services.billing", url)
            await asyncio.to_thread(downgrade, "services.billing", url, "0001")
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                tables = {
                    r["tablename"]
                    for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                }
                functions = await conn.fetchval(
                    "SELECT count(*) FROM pg_proc"
                    " WHERE proname LIKE 'billing%' AND pronamespace = 'public'::regnamespace"
                )
            finally:
                await conn.close()
            assert (tables, functions) == ({"alembic_version"}, 0)
            await asyncio.to_thread(upgrade, "services.billing", url)
        finally:
            await drop_database(url)


async def a_charge(billing: BillingDriver) -> str:
    viewer = billing.user()
    await billing.fund(viewer, 1000)
    response = await billing.charge(charge_body(viewer=viewer.id, amount=100))
    return str(response.json()["transaction_id"])


class TestWrittenOnce:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE transactions SET amount = amount + 1 WHERE id = $1",
            "DELETE FROM transactions WHERE id = $1",
            "UPDATE entries SET amount = 0 WHERE transaction_id = $1",
            "DELETE FROM entries WHERE transaction_id = $1",
        ],
    )
    async def test_ledger_rows_cannot_be_changed_or_removed(self, billing: BillingDriver, statement: str):
        transaction_id = uuid.UUID(await a_charge(billing))
        with pytest.raises(asyncpg.PostgresError, match="written once") as refused:
            await billing.pool.execute(statement, transaction_id)
        assert refused.value.sqlstate == "SB423"
        assert (await billing.verify()).ok

    @pytest.mark.parametrize("table", ["transactions", "entries"])
    async def test_ledger_tables_cannot_be_truncated(self, billing: BillingDriver, table: str):
        async with billing.pool.acquire() as connection, connection.transaction():
            # Rolled back either way; the trigger must refuse before anything happens.
            with pytest.raises(asyncpg.PostgresError, match="written once"):
                await connection.execute(f"TRUNCATE {table} CASCADE")


class TestDatabaseRefusesBrokenMoney:
    async def test_a_wallet_balance_below_zero_is_refused(self, billing: BillingDriver):
        viewer = billing.user()
        await billing.fund(viewer, 100)
        with pytest.raises(asyncpg.CheckViolationError, match="ck_accounts_balance_non_negative"):
            await billing.pool.execute(
                "UPDATE accounts SET balance = balance - 101 WHERE kind = 'wallet' AND owner_id = $1",
                viewer.id,
            )

    async def test_only_wallets_keep_a_maintained_balance(self, billing: BillingDriver):
        with pytest.raises(asyncpg.CheckViolationError, match="ck_accounts_maintained_balance"):
            await billing.pool.execute(
                "INSERT INTO accounts (kind, owner_id, currency, balance) VALUES ('creator', $1, 'USD', 0)",
                uuid.uuid4(),
            )

    async def test_one_platform_account_per_currency(self, billing: BillingDriver):
        await a_charge(billing)  # the platform account exists from the first charge on
        with pytest.raises(asyncpg.UniqueViolationError):
            await billing.pool.execute("INSERT INTO accounts (kind, currency) VALUES ('platform', 'USD')")

    async def test_a_key_makes_one_transaction(self, billing: BillingDriver):
        charge_id = uuid.UUID(await a_charge(billing))
        key = await billing.pool.fetchval("SELECT key FROM transactions WHERE id = $1", charge_id)
        with pytest.raises(asyncpg.UniqueViolationError, match="uq_transactions_key"):
            await billing.pool.execute(
                "INSERT INTO transactions (id, kind, key, request_hash, currency, amount, viewer_id,"
                " payment_method, provider_reference) VALUES ($1, 'topup', $2, $3, 'USD', 1, $4, 'm', 'r')",
                uuid.uuid4(),
                key,
                HASH,
                uuid.uuid4(),
            )

    async def test_a_charge_must_say_what_it_was_for(self, billing: BillingDriver):
        with pytest.raises(asyncpg.CheckViolationError, match="ck_transactions_charge_fields"):
            await billing.pool.execute(
                "INSERT INTO transactions (id, kind, key, request_hash, currency, amount, viewer_id,"
                " platform_fee,"
                " fee_bps) VALUES ($1, 'charge', $2, $3, 'USD', 100, $4, 20, 2000)",
                uuid.uuid4(),
                uuid.uuid4().hex,
                HASH,
                uuid.uuid4(),
            )
