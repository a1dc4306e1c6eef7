"""The periodic ledger check behind the ledger alerts (services/billing/metrics.py), on a billing
database of the test's own: a sound ledger exports no violation and when it was checked; a row
tampered with behind the triggers' back shows as a violation of the invariant it breaks, on every
replica, while only one replica per interval runs the check; a check that cannot finish counts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from common.db import asyncpg_dsn, drop_database, ensure_database
from common.migrations import upgrade
from services.billing import repository
from services.billing.metrics import LedgerChecks
from services.billing.verify import CHECKS
from streamify.stack import database_url
from tests.conftest import PG_BASE

FORGED_TOPUP_WITHOUT_ENTRIES = (
    "INSERT INTO transactions (id, kind, key, request_hash, currency, amount, viewer_id, payment_method,"
    " provider_reference) VALUES (gen_random_uuid(), 'topup', 'forged', sha256('x'), 'USD', 5000,"
    " gen_random_uuid(), 'm', 'r')"
)


@pytest.fixture
async def ledger_database() -> AsyncIterator[str]:
    name = f"streamify_ledgercheck_{uuid.uuid4().hex[:8]}"
    url = database_url(PG_BASE, name)
    await ensure_database(url)
    try:
        await asyncio.to_thread(upgrade, "services.billing", url)
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def ledger(ledger_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await repository.create_pool(asyncpg_dsn(ledger_database), min_size=0, max_size=2)
    yield pool
    await pool.close()


def replica(redis: Redis, ledger: asyncpg.Pool, database_url_: str) -> LedgerChecks:
    database = database_url_.rsplit("/", 1)[1]
    return LedgerChecks(redis, ledger, database=database, interval_s=60)


def exported(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def tamper(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with connection.transaction():
            # Ordinary triggers do not fire for a replica: the write-once triggers are bypassed.
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(statement)
    finally:
        await connection.close()


class TestLedgerCheck:
    async def test_a_sound_ledger_exports_no_violation_and_when_it_was_checked(
        self, redis: Redis, ledger: asyncpg.Pool, ledger_database: str
    ):
        checks = replica(redis, ledger, ledger_database)
        before = time.time()
        assert await checks.run_once() is True
        await checks.refresh()
        for check in CHECKS:
            assert exported("streamify_billing_ledger_violations", check=check) == 0, check
        checked_at = exported("streamify_billing_ledger_last_check_timestamp_seconds")
        assert checked_at is not None and before <= checked_at <= time.time()
        duration = exported("streamify_billing_ledger_check_duration_seconds")
        assert duration is not None and 0 < duration < 30

    async def test_a_tampered_row_shows_on_every_replica_but_one_replica_checks_per_interval(
        self, redis: Redis, ledger: asyncpg.Pool, ledger_database: str
    ):
        await tamper(ledger_database, FORGED_TOPUP_WITHOUT_ENTRIES)
        first, second = replica(redis, ledger, ledger_database), replica(redis, ledger, ledger_database)
        assert await first.run_once() is True
        # The other replica, within the same interval, leaves the ledger alone...
        assert await second.run_once() is False
        # ...and exports what the first one found.
        await second.refresh()
        assert exported("streamify_billing_ledger_violations", check="transactions_balanced") == 1
        others = [check for check in CHECKS if check != "transactions_balanced"]
        assert [exported("streamify_billing_ledger_violations", check=check) for check in others] == [
            0
        ] * len(others)

    async def test_a_check_that_cannot_finish_counts_an_error_and_keeps_the_last_outcome(
        self, redis: Redis, ledger: asyncpg.Pool, ledger_database: str
    ):
        checks = replica(redis, ledger, ledger_database)
        assert await checks.run_once() is True
        await checks.refresh()
        checked_at = exported("streamify_billing_ledger_last_check_timestamp_seconds")
        errors = exported("streamify_billing_ledger_check_errors_total") or 0

        await ledger.close()
        await redis.delete(checks.lock_key)  # the next interval
        assert await checks.run_once() is True
        await checks.refresh()
        assert exported("streamify_billing_ledger_check_errors_total") == errors + 1
        assert exported("streamify_billing_ledger_last_check_timestamp_seconds") == checked_at
