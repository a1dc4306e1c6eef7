"""Opaque keyset cursors: base64url of a small JSON object the client never parses.

A cursor holds the sort key of the last row of a page and its id (the tie-break that makes the
order total, so equal sort keys never repeat or skip a row), and names the ordering it belongs to:
a cursor from one ordering handed to another is refused rather than silently misread.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.catalog.errors import InvalidCursor

MAX_CURSOR_LENGTH = 512
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class Ordering(StrEnum):
    """Each ordering names its sort key; all of them break ties on id."""

    published = "published"  # public lists, newest first: published_at DESC
    created = "created"  # a creator's studio and comment threads: created_at
    views = "views"  # most viewed first: view_count DESC
    rank = "rank"  # search relevance: ts_rank DESC


SortValue = datetime | int | float


@dataclass(frozen=True, slots=True)
class Position:
    """Where the previous page ended."""

    ordering: Ordering
    value: SortValue
    id: uuid.UUID


def encode_cursor(ordering: Ordering, value: SortValue, item_id: uuid.UUID) -> str:
    encoded: str | int | float = value.isoformat() if isinstance(value, datetime) else value
    payload = json.dumps({"o": ordering.value, "v": encoded, "id": str(item_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, ordering: Ordering) -> Position:
    """The position after which the next page of ``ordering`` starts; InvalidCursor when forged."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or data.get("o") != ordering.value:
            raise InvalidCursor()
        item_id = uuid.UUID(str(data["id"]))
        raw = data["v"]
        value: SortValue
        if ordering in (Ordering.published, Ordering.created):
            if not isinstance(raw, str):
                raise InvalidCursor()
            value = datetime.fromisoformat(raw)
            if value.tzinfo is None:
                raise InvalidCursor()
        elif ordering is Ordering.views:
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                raise InvalidCursor()
            value = raw
        else:
            if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
                raise InvalidCursor()
            value = float(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor() from exc
    return Position(ordering=ordering, value=value, id=item_id)
