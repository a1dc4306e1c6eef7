"""What the gateway remembers of Redis's last answers, so most requests need not wait for the next.

Every request still runs the edge script in Redis (``gateway.ratelimit``): it is counted against
its limits there and its token is looked up on the deny-list. What this module decides is
whether the request *waits* for that answer. It does not when the answer is already known:

- every limit it counts against had, at its last answer (less than ``fresh_s`` ago), room for
  this request and for those let through since, with a margin to spare (a twentieth of the
  limit, at least ``MIN_MARGIN``); its RateLimit-* headers are worked out from that answer;
- its token was found not revoked less than ``fresh_s`` ago while the gateway was subscribed
  to auth's revocation channel, and no revocation of it has been announced since.

Near a limit, for a token or an address not seen lately, or while the revocation channel is
down, the request waits for the script's verdict as before. The answers to the requests let
through refresh what is remembered, so under steady traffic the memory is milliseconds old.

What this changes: with several gateway replicas, a limit can be overshot by the requests the
replicas let through during one Redis round trip; and a revoked token whose announcement was
lost passes the edge until the next answer about it (normally the very next request's).
Services check revocation on every request themselves, so such a token still does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import stamina
import structlog
from redis.exceptions import RedisError

from common.tokens import REVOKED_JTI_CHANNEL

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("gateway.memory")

FRESH_S = 1.0
MIN_MARGIN = 10
MAX_ENTRIES = 50_000
# A revocation announced this recently overrides a "not revoked" answer that arrives after it
# (the answer may have been computed before the revocation).
_ANNOUNCED_KEEP_S = 10.0
_LISTEN_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Window:
    limit: int
    remaining: int  # after the last request Redis answered for
    reset_ms: int
    at: float  # time.monotonic() of that answer
    pending: int = 0  # let through since, not yet answered for


class LimitMemory:
    """The last answer about each rate-limit window, per key."""

    def __init__(self, *, fresh_s: float = FRESH_S) -> None:
        self._fresh_s = fresh_s
        self._windows: dict[bytes, _Window] = {}

    def admit(self, windows: list[tuple[bytes, int]], now: float) -> list[tuple[bytes, bytes]] | None:
        """RateLimit-* headers for a request counted against the ``(key, limit)`` windows and let
        through on what is known, or None to ask Redis.

        When it returns headers the request counts as pending until ``learn`` hears its answer.
        """
        known = []
        tightest: tuple[int, _Window] | None = None
        for key, _ in windows:
            window = self._windows.get(key)
            if window is None or now - window.at >= self._fresh_s:
                return None
            left = window.remaining - window.pending - 1
            if left < max(MIN_MARGIN, window.limit // 20):
                return None
            known.append(window)
            if tightest is None or left < tightest[0]:
                tightest = (left, window)
        if tightest is None:
            return []  # no limit applies: only the token's verdict mattered
        for window in known:
            window.pending += 1
        left, window = tightest
        reset_s = max(0, -(-(window.reset_ms - int((now - window.at) * 1000)) // 1000))
        return [
            (b"ratelimit-limit", str(window.limit).encode()),
            (b"ratelimit-remaining", str(left).encode()),
            (b"ratelimit-reset", str(reset_s).encode()),
        ]

    def learn(
        self, windows: list[tuple[bytes, int]], reply: list[Any], now: float, *, admitted: bool
    ) -> None:
        """Remember the script's answer about each ``(key, limit)`` window (its remaining count and
        reset follow the first five items); ``admitted``: the request went on without waiting."""
        if len(self._windows) >= MAX_ENTRIES:
            self._windows.clear()
        for k, (key, limit) in enumerate(windows):
            remaining, reset_ms = int(reply[5 + 2 * k]), int(reply[6 + 2 * k])
            window = self._windows.get(key)
            if window is None:
                if not admitted:
                    self._windows[key] = _Window(limit, remaining, reset_ms, now)
                continue
            window.remaining, window.reset_ms, window.at = remaining, reset_ms, now
            if admitted and window.pending:
                window.pending -= 1

    def forget(self, keys: list[bytes]) -> None:
        for key in keys:
            self._windows.pop(key, None)


class TokenMemory:
    """Token ids Redis lately found not revoked, forgotten as soon as auth announces a revocation.

    Nothing is remembered while the gateway is not subscribed to the announcements (Redis down,
    reconnecting): every token then waits for the deny-list lookup.
    """

    def __init__(self, redis: Redis, *, fresh_s: float = FRESH_S) -> None:
        self._redis = redis
        self._fresh_s = fresh_s
        self._good: dict[str, float] = {}
        self._announced: dict[str, float] = {}
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    def good(self, jti: str, now: float) -> bool:
        at = self._good.get(jti)
        return at is not None and now - at < self._fresh_s and self._listening

    def learn(self, jti: str, revoked: bool, now: float) -> None:
        if revoked or not self._listening:
            self._good.pop(jti, None)
            return
        announced_at = self._announced.get(jti)
        if announced_at is not None and now - announced_at < _ANNOUNCED_KEEP_S:
            return
        if len(self._good) >= MAX_ENTRIES:
            self._good.clear()
        self._good[jti] = now

    def forget(self, jti: str) -> None:
        self._good.pop(jti, None)

    def announced(self, jti: str, now: float) -> None:
        self._good.pop(jti, None)
        if len(self._announced) >= MAX_ENTRIES:
            self._announced = {j: at for j, at in self._announced.items() if now - at < _ANNOUNCED_KEEP_S}
        self._announced[jti] = now

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        task, self._task = self._task, None
        # redis-py can swallow a cancellation that lands while it connects: cancel until done.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)

    async def _listen(self) -> None:
        """Follow the announcements for as long as the gateway runs, resubscribing after errors."""
        async for attempt in stamina.retry_context(
            on=(RedisError, OSError), attempts=None, timeout=None, wait_initial=0.2, wait_max=5.0
        ):
            with attempt:
                await self._follow()

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(REVOKED_JTI_CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=_LISTEN_TIMEOUT_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Announcements missed while unsubscribed are unknown: start from nothing.
                    self._good.clear()
                    self._listening = True
                    log.info("revocations_followed")
                elif message["type"] == "message":
                    data = message["data"]
                    self.announced(data.decode() if isinstance(data, bytes) else str(data), time.monotonic())
        except (RedisError, OSError) as exc:
            log.warning("revocations_unfollowed", error=repr(exc))
            raise
        finally:
            self._listening = False
            self._good.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()
