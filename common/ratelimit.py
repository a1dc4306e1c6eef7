"""Redis-backed rate limits (the `limits` library's sliding-window counter over redis-py).

One ``RateLimiter`` per process; rules are strings such as ``"10/minute"`` or ``"100 per second"``.
The result carries what the IETF RateLimit headers and ``Retry-After`` need.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_after_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers, plus ``Retry-After`` when refused."""
        values = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after_s),
        }
        if not self.allowed:
            values["Retry-After"] = str(max(1, self.reset_after_s))
        return values


@lru_cache(maxsize=256)
def parse_rule(rule: str) -> RateLimitItem:
    return parse(rule)


class RateLimiter:
    def __init__(self, redis_url: str, *, prefix: str = "ratelimit") -> None:
        url = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
        self._storage = RedisStorage(url, implementation="redispy", key_prefix=prefix)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)

    async def hit(self, rule: str, *identifiers: str, cost: int = 1) -> RateLimitResult:
        """Count one request against ``rule`` for ``identifiers``; refused requests are not counted."""
        item = parse_rule(rule)
        allowed = await self._strategy.hit(item, *identifiers, cost=cost)
        stats = await self._strategy.get_window_stats(item, *identifiers)
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return RateLimitResult(allowed, item.amount, max(0, stats.remaining), reset_after)

    async def test(self, rule: str, *identifiers: str) -> bool:
        """Would a request be allowed now? (does not count it)"""
        return await self._strategy.test(parse_rule(rule), *identifiers)

    async def remaining(self, rule: str, *identifiers: str) -> int:
        """How many more requests ``rule`` allows now for ``identifiers`` (does not count one)."""
        stats = await self._strategy.get_window_stats(parse_rule(rule), *identifiers)
        return max(0, stats.remaining)

    async def reset(self, rule: str, *identifiers: str) -> None:
        await self._strategy.clear(parse_rule(rule), *identifiers)
