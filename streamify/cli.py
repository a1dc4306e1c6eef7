"""``streamify``: run the local stack and administer it. Every command takes ``--data-dir``.

click rather than argparse: nested command groups (``auth rotate-keys``, later ``billing verify``),
options that fall back to environment variables and hidden prompts come built in, and
``CliRunner`` runs the commands in-process in tests. It is already installed with uvicorn.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
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
