"""``streamify``: run the local stack and administer it. Every command takes ``--data-dir``.

click rather than argparse: nested command groups (``auth rotate-keys``, later ``billing verify``),
options that fall back to environment variables and hidden prompts come built in, and
``CliRunner`` runs the commands in-process in tests. It is already installed with uvicorn.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from streamify import stack

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=stack.DEFAULT_DATA_DIR,
    envvar="STREAMIFY_DATA_DIR",
    show_default=True,
    help="Where embedded PostgreSQL/Redis and generated secrets live.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Streamify: a pay-per-minute video platform."""


@main.command()
@data_dir_option
@click.option(
    "--port",
    type=click.IntRange(1, 65535 - len(stack.SERVICES)),
    default=stack.DEFAULT_PORT,
    envvar="STREAMIFY_PORT",
    show_default=True,
    help="Gateway port; the five services use the next five ports.",
)
def up(data_dir: Path, port: int) -> None:
    """Run the whole platform in the foreground; Ctrl-C stops it.

    \b
    Environment:
      STREAMIFY_DATABASE_URL  PostgreSQL server (default postgresql+asyncpg://postgres@127.0.0.1:5432)
      REDIS_URL               Redis (default redis://127.0.0.1:6379/0)
      STREAMIFY_DB_PREFIX     database names are <prefix>_<service> (default streamify)
      STREAMIFY_TRANSCODERS   transcoder worker processes (default: one per core)
      STREAMIFY_FORK=0        start each process in a fresh interpreter (slower start)
    PostgreSQL and Redis are embedded under --data-dir when nothing answers at those URLs.
    """
    config = stack.StackConfig.from_env(data_dir=data_dir, port=port)
    try:
        code = stack.run_up(config)
    except stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@main.command()
@data_dir_option
def migrate(data_dir: Path) -> None:
    """Create the five databases when missing and run every service's migrations."""
    config = stack.StackConfig.from_env(data_dir=data_dir)
    with stack.backends(config, redis=False) as found:
        stack.migrate(config, found.database_url)
    click.echo("Databases migrated.")


@main.command("create-admin")
@data_dir_option
@click.option("--email", required=True, help="The admin's email; an existing user is promoted.")
@click.option(
    "--password",
    envvar="STREAMIFY_ADMIN_PASSWORD",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Also read from STREAMIFY_ADMIN_PASSWORD; prompted for when absent.",
)
@click.option("--display-name", default="Administrator", show_default=True)
def create_admin(data_dir: Path, email: str, password: str, display_name: str) -> None:
    """Create an admin account, or promote an existing user to admin."""
    from services.auth.admin import create_admin as create

    config = stack.StackConfig.from_env(data_dir=data_dir)
    stack.command_environment(config)
    with stack.backends(config, redis=False) as found:
        stack.migrate(config, found.database_url, services=("auth",))
        url = stack.database_url(found.database_url, config.database_name("auth"))
        user_id = _run_admin_task(create(url, email, password, display_name))
    click.echo(f"Admin {email} ready (user id {user_id}).")


@main.group()
def auth() -> None:
    """Administer the auth service."""


@auth.command("rotate-keys")
@data_dir_option
def rotate_keys(data_dir: Path) -> None:
    """Make a new signing key current; older keys stay published until their tokens expire."""
    from services.auth.admin import rotate_keys as rotate

    config = stack.StackConfig.from_env(data_dir=data_dir)
    stack.command_environment(config)
    # Redis too: running auth instances hear about the rotation through it and reload at once.
    with stack.backends(config) as found:
        url = stack.database_url(found.database_url, config.database_name("auth"))
        kid = _run_admin_task(rotate(url, redis_url=found.redis_url))
    click.echo(f"New signing key: {kid}")


@main.group()
def billing() -> None:
    """Administer the billing service."""


@billing.command("verify")
@data_dir_option
def verify_billing(data_dir: Path) -> None:
    """Check every ledger invariant; print a JSON report; exit 1 on any violation.

    \b
    Each transaction's entries sum to zero; each wallet's balance equals the sum of its entries
    (at every step of its history); no balance below zero; no key used twice; every charge,
    top-up and refund has exactly its entries, with the documented fee split.
    """
    import contextlib
    import json

    import asyncpg

    from services.billing.verify import verify_ledger

    config = stack.StackConfig.from_env(data_dir=data_dir)
    # stdout carries the report alone (for jq and scripts); finding the servers logs to stderr.
    with contextlib.redirect_stdout(sys.stderr), stack.backends(config, redis=False) as found:
        url = stack.database_url(found.database_url, config.database_name("billing"))
        try:
            report = asyncio.run(verify_ledger(url))
        except asyncpg.InvalidCatalogNameError as exc:
            raise click.ClickException(
                f"There is no billing database {config.database_name('billing')!r}; run `streamify migrate`."
            ) from exc
        except asyncpg.UndefinedTableError as exc:
            raise click.ClickException(
                "The billing database is not migrated; run `streamify migrate`."
            ) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))
    if not report.ok:
        broken = ", ".join(f"{name} ({count})" for name, count in report.violations.items())
        click.echo(f"Ledger invariants violated: {broken}", err=True)
        sys.exit(1)
    click.echo("Ledger verified: every invariant holds.", err=True)


@main.group()
def analytics() -> None:
    """Administer the analytics service."""


@analytics.command("backfill")
@data_dir_option
def backfill_analytics(data_dir: Path) -> None:
    """Rebuild every rollup from the raw events analytics has stored (one transaction: readers
    see the old figures until the new ones are complete)."""
    from common.db import asyncpg_dsn
    from services.analytics import repository
    from services.analytics.settings import AnalyticsSettings
    from services.analytics.tasks import backfill, rules_from

    config = stack.StackConfig.from_env(data_dir=data_dir)
    stack.command_environment(config)
    settings = AnalyticsSettings()

    async def rebuild(url: str) -> int:
        pool = await repository.create_pool(asyncpg_dsn(url), max_size=1)
        try:
            return await backfill(pool, rules_from(settings))
        finally:
            await pool.close()

    with stack.backends(config, redis=False) as found:
        url = stack.database_url(found.database_url, config.database_name("analytics"))
        replayed = _run_admin_task(rebuild(url))
    click.echo(f"Rebuilt analytics rollups from {replayed} events.")


@main.group()
def events() -> None:
    """Inspect the event bus."""


@events.group()
def dlq() -> None:
    """Dead letters: events a consumer gave up on (after its retries, or undecodable)."""


dlq_stream_option = click.option(
    "--dlq-stream",
    default="streamify:events:dlq",
    show_default=True,
    help="The dead-letter stream.",
)


@dlq.command("list")
@data_dir_option
@dlq_stream_option
@click.option("--count", type=click.IntRange(1), default=100, show_default=True, help="Show the oldest N.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with the full events.")
def dlq_list(data_dir: Path, dlq_stream: str, count: int, as_json: bool) -> None:
    """List dead letters, oldest first: why each failed, and the event itself."""
    import json

    from common.consumer import dlq_entries, dlq_length

    async def read(redis: Any) -> tuple[list[Any], int]:
        return await dlq_entries(redis, count=count, dlq_stream=dlq_stream), await dlq_length(
            redis, dlq_stream=dlq_stream
        )

    letters, total = _with_event_redis(data_dir, read)
    if as_json:
        click.echo(json.dumps([letter.as_dict() for letter in letters], indent=2))
    else:
        if letters:
            click.echo(f"{'ID':<17}  {'FAILED AT':<20}  {'TYPE':<26}  {'GROUP':<12}  {'TRIES':>5}  ERROR")
        for letter in letters:
            event = letter.event
            kind = event.type if event is not None else "(undecodable)"
            failed_at = letter.failed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            error = " ".join(letter.error.split())
            error = error if len(error) <= 80 else error[:79] + "…"
            columns = (letter.id, failed_at, kind, letter.group)
            click.echo("{:<17}  {:<20}  {:<26}  {:<12}  {:>5}  {}".format(*columns, letter.attempts, error))
    click.echo(f"{len(letters)} of {total} dead letters shown.", err=True)


@dlq.command("replay")
@data_dir_option
@dlq_stream_option
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def dlq_replay(data_dir: Path, dlq_stream: str, ids: tuple[str, ...], replay_all: bool) -> None:
    """Put dead letters (by ID, or --all) back on the event stream and remove them from the DLQ.

    Every consumer group sees a replayed event again; groups that handled it before drop it by
    its event id. Fix what made it fail first, or it comes back after the consumer's retries.
    """
    import re

    from common.consumer import dlq_entries, replay_dlq

    if bool(ids) == replay_all:
        raise click.UsageError("Name the dead letters to replay, or pass --all.")
    for entry_id in ids:
        if not re.fullmatch(r"\d+-\d+", entry_id):
            raise click.BadParameter(
                f"{entry_id!r} is not a stream entry id like 1732270000000-0", param_hint="ID"
            )
    wanted = list(dict.fromkeys(ids)) if ids else None

    async def replay(redis: Any) -> tuple[int, list[str]]:
        missing: list[str] = []
        if wanted is not None:
            present = {letter.id for letter in await dlq_entries(redis, ids=wanted, dlq_stream=dlq_stream)}
            missing = [entry_id for entry_id in wanted if entry_id not in present]
        return await replay_dlq(redis, ids=wanted, dlq_stream=dlq_stream), missing

    replayed, missing = _with_event_redis(data_dir, replay)
    click.echo(f"Replayed {replayed} dead letter{'s' if replayed != 1 else ''}.")
    if missing:
        click.echo(f"Not in the dead-letter stream: {', '.join(missing)}", err=True)
        sys.exit(1)


def _with_event_redis(data_dir: Path, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Runs ``work(redis)`` against the stack's Redis (REDIS_URL, else the embedded one under
    ``--data-dir``); an unreachable Redis is a clean CLI error."""
    import contextlib

    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def run(url: str) -> T:
        redis = Redis.from_url(url)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    config = stack.StackConfig.from_env(data_dir=data_dir)
    # stdout carries the listing alone (for jq and scripts); finding the servers logs to stderr.
    with contextlib.redirect_stdout(sys.stderr), stack.backends(config) as found:
        try:
            return asyncio.run(run(found.redis_url))
        except RedisError as exc:
            raise click.ClickException(f"Redis: {exc}") from exc


def _run_admin_task(coro: Coroutine[Any, Any, T]) -> T:
    """Runs an admin coroutine; expected errors (weak password, ...) become a clean CLI error."""
    from common.errors import AppError

    try:
        return asyncio.run(coro)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
