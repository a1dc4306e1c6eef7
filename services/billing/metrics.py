"""Billing's business metrics, and the periodic ledger check that feeds the ledger alerts.

Money counters count what the ledger took in, once per transaction: a replayed request (same key)
adds nothing. Amounts are integer minor units (cents) per currency, like the API.

Ledger check. Every ``BILLING_LEDGER_CHECK_INTERVAL_S`` (900 s; 0 turns it off) one billing replica
runs every invariant of ``streamify billing verify`` (services/billing/verify.py) on one read-only
snapshot and writes the outcome to Redis (``billing:ledger_check:{database}:last``); a Redis lock
that lives one interval makes it one check per interval however many replicas run. The keys name
the billing database, so deployments (or test runs) sharing a Redis keep their checks apart.
Every replica exports the last outcome at scrape time, so the numbers agree whichever replica
Prometheus asks:

- ``streamify_billing_ledger_violations{check}``: rows breaking each invariant (all 0 when sound);
- ``streamify_billing_ledger_last_check_timestamp_seconds``: when the last check finished (0 before
  the first), for the "check is stale" alert;
- ``streamify_billing_ledger_check_duration_seconds``: how long it took;
- ``streamify_billing_ledger_check_errors_total``: checks that could not finish (per replica).

An operator who sees the alert runs ``streamify billing verify`` for the offending rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import orjson
import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from common.metrics import DATABASE_POOLS, asyncpg_pool_usage, on_scrape
from services.billing.settings import BillingSettings
from services.billing.verify import CHECKS, check_ledger

log = structlog.get_logger("billing.metrics")

UNITS_CHARGED = Counter(
    "streamify_billing_units_charged_total",
    "Playback units charged to viewers' wallets, by currency (replayed charges not counted).",
    ["currency"],
)
CHARGED_CENTS = Counter(
    "streamify_billing_charged_cents_total",
    "Money charged for playback, in minor units (cents), by currency.",
    ["currency"],
)
PLATFORM_FEE_CENTS = Counter(
    "streamify_billing_platform_fee_cents_total",
    "The platform's fee out of the money charged, in minor units (cents), by currency.",
    ["currency"],
)
WALLET_DECLINES = Counter(
    "streamify_billing_wallet_declines_total",
    "Charges refused because the viewer's wallet could not pay the unit (insufficient funds).",
    ["currency"],
)
TOPUPS = Counter(
    "streamify_billing_topups_total",
    "Top-up requests by outcome: succeeded, replayed, declined (by the payment provider), "
    "provider_error (provider unreachable or failing), invalid_payment_method.",
    ["outcome"],
)
TOPUP_CENTS = Counter(
    "streamify_billing_topup_cents_total",
    "Money added to wallets by top-ups, in minor units (cents), by currency.",
    ["currency"],
)
REFUNDED_CENTS = Counter(
    "streamify_billing_refunded_cents_total",
    "Money refunded to viewers, in minor units (cents), by currency.",
    ["currency"],
)
LEDGER_VIOLATIONS = Gauge(
    "streamify_billing_ledger_violations",
    "Rows breaking each ledger invariant at the last ledger check (0 for every check when sound).",
    ["check"],
)
LEDGER_LAST_CHECK = Gauge(
    "streamify_billing_ledger_last_check_timestamp_seconds",
    "When the last ledger check finished, as a Unix time (0 before the first).",
)
LEDGER_CHECK_DURATION = Gauge(
    "streamify_billing_ledger_check_duration_seconds",
    "How long the last ledger check took.",
)
LEDGER_CHECK_ERRORS = Counter(
    "streamify_billing_ledger_check_errors_total",
    "Ledger checks this replica started but could not finish (database errors).",
)

TOPUP_OUTCOMES = ("succeeded", "replayed", "declined", "provider_error", "invalid_payment_method")

for _outcome in TOPUP_OUTCOMES:
    TOPUPS.labels(_outcome)
for _check in CHECKS:
    LEDGER_VIOLATIONS.labels(_check)


def _init_currency(currency: str) -> None:
    """Every per-currency series at 0 from the start, so the first charge shows in increase()."""
    for counter in (
        UNITS_CHARGED,
        CHARGED_CENTS,
        PLATFORM_FEE_CENTS,
        WALLET_DECLINES,
        TOPUP_CENTS,
        REFUNDED_CENTS,
    ):
        counter.labels(currency)


_CHARGE_CHILDREN: dict[str, tuple[Any, Any, Any]] = {}


def count_charge(currency: str, *, amount: int, platform_fee: int, replayed: bool) -> None:
    if replayed:
        return
    # Charges come at heartbeat rates: the labelled children are looked up once per currency
    # (``labels()`` takes a lock and builds a key on every call).
    children = _CHARGE_CHILDREN.get(currency)
    if children is None:
        children = _CHARGE_CHILDREN[currency] = (
            UNITS_CHARGED.labels(currency),
            CHARGED_CENTS.labels(currency),
            PLATFORM_FEE_CENTS.labels(currency),
        )
    units, cents, fee = children
    units.inc()
    cents.inc(amount)
    fee.inc(platform_fee)


def count_wallet_decline(currency: str) -> None:
    WALLET_DECLINES.labels(currency).inc()


def count_topup(outcome: str, *, currency: str = "", amount: int = 0) -> None:
    TOPUPS.labels(outcome).inc()
    if outcome == "succeeded":
        TOPUP_CENTS.labels(currency).inc(amount)


def count_refund(currency: str, *, amount: int, replayed: bool) -> None:
    if not replayed:
        REFUNDED_CENTS.labels(currency).inc(amount)


class LedgerChecks:
    """The periodic ledger check (see the module docstring) and its scrape-time export."""

    def __init__(self, redis: Redis, ledger: asyncpg.Pool, *, database: str, interval_s: float) -> None:
        self.redis = redis
        self.ledger = ledger
        self.interval_s = interval_s
        self.owner = uuid.uuid4().hex
        self.lock_key = f"billing:ledger_check:{database}:lock"
        self.last_key = f"billing:ledger_check:{database}:last"

    async def run_once(self) -> bool:
        """Check the ledger unless another replica did within the interval; True when this one did."""
        lock_ms = max(1, round(self.interval_s * 1000))
        if not await self.redis.set(self.lock_key, self.owner, nx=True, px=lock_ms):
            return False
        started = time.perf_counter()
        try:
            async with self.ledger.acquire() as connection:
                report = await check_ledger(connection)
        except Exception as exc:
            LEDGER_CHECK_ERRORS.inc()
            log.warning("ledger_check_failed", error=repr(exc))
            return True
        duration = time.perf_counter() - started
        outcome = {
            "finished_at": time.time(),
            "duration_s": duration,
            "violations": orjson.dumps(report.violations),
        }
        # (redis-py types its commands for both clients; the asyncio one always returns awaitables.)
        await cast(Awaitable[int], self.redis.hset(self.last_key, mapping=outcome))
        if report.ok:
            log.info("ledger_checked", ok=True, duration_s=round(duration, 3), counts=report.counts)
        else:
            log.error(
                "ledger_invariants_violated", violations=report.violations, duration_s=round(duration, 3)
            )
        return True

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # Redis unreachable: try again next interval
                log.warning("ledger_check_not_started", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        """The last check's outcome, as the gauges say it (called at every scrape)."""
        last = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.last_key))
        violations = orjson.loads(last.get(b"violations", b"{}")) if last else {}
        for check in CHECKS:
            LEDGER_VIOLATIONS.labels(check).set(int(violations.get(check, 0)))
        LEDGER_LAST_CHECK.set(float(last.get(b"finished_at", 0)))
        LEDGER_CHECK_DURATION.set(float(last.get(b"duration_s", 0)))


class BillingObservability:
    """What billing's lifespan starts for its metrics; ``aclose`` undoes it."""

    def __init__(self, redis: Redis, ledger: asyncpg.Pool, settings: BillingSettings) -> None:
        _init_currency(settings.currency)
        self.checks = LedgerChecks(
            redis,
            ledger,
            database=make_url(settings.database_url).database or "billing",
            interval_s=settings.ledger_check_interval_s,
        )
        self._undo: list[Callable[[], None]] = [
            DATABASE_POOLS.watch("ledger", asyncpg_pool_usage(ledger)),
            on_scrape(self.checks.refresh),
        ]
        self._task: asyncio.Task[None] | None = None
        if settings.ledger_check_interval_s > 0:
            self._task = asyncio.create_task(self.checks.run_forever(), name="billing-ledger-check")

    async def aclose(self) -> None:
        for undo in self._undo:
            undo()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
