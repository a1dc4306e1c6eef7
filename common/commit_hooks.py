"""Work that must happen only once a transaction has committed: enqueueing a job, telling
another service, removing objects from storage.

A service function registers it with ``after_commit(session, callback)``; it is kept on the session
and run by whoever commits:

- HTTP routes use ``HookedSessionDep`` (below), which commits like ``common.db.get_session`` and
  then runs the callbacks, before the response is sent;
- anything else (a worker, a test, the upload code outside a request) uses
  ``async with transaction(sessions) as session: ...``, which does the same.

On rollback the callbacks are dropped: a job is never enqueued for a change that did not happen.
If the process dies between the commit and a callback, the callback is lost; every callback must
be idempotent (deterministic job ids, deletes of missing objects are no-ops), so a retry or a
periodic sweep can repeat it safely. Events do not go through here: they are written to the
service's outbox in the transaction itself (``common.outbox.stage``), so a crash cannot lose them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import get_session

AfterCommit = Callable[[], Awaitable[object]]
_KEY = "streamify.after_commit"
log = structlog.get_logger("commit_hooks")


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once the session's current transaction has committed."""
    session.info.setdefault(_KEY, []).append(callback)


def discard_after_commit(session: AsyncSession) -> None:
    session.info.pop(_KEY, None)


async def run_after_commit(session: AsyncSession) -> None:
    """Run (and forget) the registered callbacks in order; one failing does not stop the others."""
    callbacks: list[AfterCommit] = session.info.pop(_KEY, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            # The change itself is committed; the caller cannot undo it, so a failed follow-up is
            # logged for a retry or sweep rather than turned into an error response.
            log.exception("after_commit_failed", callback=getattr(callback, "__qualname__", repr(callback)))


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed at the end of the block, then its after-commit callbacks run."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            discard_after_commit(session)
            raise
    await run_after_commit(session)


_session_scope = asynccontextmanager(get_session)


async def get_hooked_session(request: Request) -> AsyncIterator[AsyncSession]:
    """``common.db.get_session`` (commit on success, roll back on error), then the transaction's
    after-commit callbacks, all before the response is sent."""
    async with _session_scope(request) as session:
        yield session
    await run_after_commit(session)


HookedSessionDep = Annotated[AsyncSession, Depends(get_hooked_session, scope="function")]
