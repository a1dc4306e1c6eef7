"""Reading what landed on an event stream since a point in a test (the stream is shared by every
test and service of the run, so a test looks only at entries added after its mark)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from common.events import EVENT_STREAM, Event, decode_event


class StreamWatch:
    """The entries of ``stream`` added after :meth:`mark` was awaited."""

    def __init__(self, redis: Redis, stream: str = EVENT_STREAM) -> None:
        self.redis = redis
        self.stream = stream
        self.after = "0-0"

    async def mark(self) -> StreamWatch:
        last = await self.redis.xrevrange(self.stream, count=1)
        self.after = last[0][0].decode() if last else "0-0"
        return self

    async def raw(self) -> list[bytes]:
        """The ``event`` field of every new entry, as it was written."""
        entries = await cast(Awaitable[list[Any]], self.redis.xrange(self.stream, min=f"({self.after}"))
        return [fields[b"event"] for _, fields in entries]

    async def events(self, type_: str | None = None, **payload: Any) -> list[Event]:
        """New events, of ``type_`` when given, whose payload has every ``payload`` item."""
        events = [decode_event({b"event": raw}) for raw in await self.raw()]
        return [
            event
            for event in events
            if (type_ is None or event.type == type_)
            and all(event.payload.get(key) == value for key, value in payload.items())
        ]
