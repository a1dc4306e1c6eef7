"""Opaque keyset cursors for the watch history: base64url of the last row's (last_watched_at,
video_id), the same order the index keeps (most recent first, video id breaking ties)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from services.streaming.errors import InvalidCursor

MAX_CURSOR_LENGTH = 256
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class HistoryPosition:
    last_watched_at: datetime
    video_id: uuid.UUID


def encode_cursor(position: HistoryPosition) -> str:
    payload = json.dumps(
        {"t": position.last_watched_at.isoformat(), "v": str(position.video_id)}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> HistoryPosition:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("t"), str):
            raise InvalidCursor()
        when = datetime.fromisoformat(data["t"])
        if when.tzinfo is None:
            raise InvalidCursor()
        return HistoryPosition(last_watched_at=when, video_id=uuid.UUID(str(data["v"])))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor() from exc
