"""Opaque cursors for keyset pagination: base64url of a small JSON object the client never parses."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from services.auth.errors import InvalidCursor

MAX_CURSOR_LENGTH = 512


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    payload = json.dumps({"t": created_at.isoformat(), "id": str(item_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) position after which the next page starts; InvalidCursor when forged."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        item_id = uuid.UUID(data["id"])
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor() from exc
    if created_at.tzinfo is None:
        raise InvalidCursor()
    return created_at, item_id
