"""Background loops of the services' lifespans: some work every so often, stopped at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger("periodic")


async def every(interval_s: float, work: Callable[[], Awaitable[object]], *, failure: str) -> None:
    """``work()`` every ``interval_s`` seconds, the first after one interval, until cancelled. A
    round that fails (a database or Redis briefly away) is logged as ``failure`` with its traceback,
    and the next round comes as usual."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await work()
        except Exception:
            log.exception(failure)


async def stop(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel each task and wait for it to end."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
