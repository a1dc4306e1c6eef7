"""Playback credentials: the signed, short-lived token in a session's HLS URLs.

A credential lives in the path (``/playback/sessions/{session_id}/{credential}/master.m3u8``), so
the player's relative playlist URIs carry it to every media playlist and segment without cookies
or headers, which HLS players cannot be relied on to send. It proves that this service issued
the URL for this session and this video, until ``expires_at``; whether the session may still play
(paid up, not ended) is the live session state's business, checked on every request.

Format: 60 URL-safe base64 characters (45 bytes, no padding)::

    version (1) | expires_at, Unix seconds, unsigned big-endian (8) | video_id (16) | mac (20)

with ``mac`` the first 20 bytes of HMAC-SHA256(secret, context | session_id | version..video_id).
The session id is in the MAC but not in the token (it is already in the path), so a credential
taken from one session's URL does not work under another. A fixed binary layout keeps the URL
short (an HS256 JWT with the same claims is ~220 characters) and verification to one HMAC and a
constant-time compare (a few microseconds; this runs on every segment request).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import time
import uuid
from dataclasses import dataclass

from common.errors import Forbidden

VERSION = 1
_CONTEXT = b"streamify/playback-credential\x00"
_BODY = struct.Struct(">BQ16s")
MAC_BYTES = 20
CREDENTIAL_BYTES = _BODY.size + MAC_BYTES  # 45: a multiple of 3, so base64 has no padding
CREDENTIAL_LENGTH = CREDENTIAL_BYTES * 4 // 3  # 60 characters
_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{CREDENTIAL_LENGTH}}}")
_MAX_EXPIRES_AT = 2**64 - 1


class InvalidPlaybackCredential(Forbidden):
    code = "invalid_playback_credential"
    title = "This playback URL is not valid (tampered with, expired, or for another session)."


@dataclass(frozen=True, slots=True)
class PlaybackGrant:
    """What a verified credential allows: playing ``video_id`` in ``session_id`` until ``expires_at``."""

    session_id: uuid.UUID
    video_id: uuid.UUID
    expires_at: int


def _mac(secret: str, session_id: uuid.UUID, body: bytes) -> bytes:
    # hmac.digest is OpenSSL's one-shot HMAC: a third of the cost of an hmac.new() object.
    return hmac.digest(secret.encode(), _CONTEXT + session_id.bytes + body, "sha256")[:MAC_BYTES]


def mint_playback_credential(
    secret: str, *, session_id: uuid.UUID, video_id: uuid.UUID, expires_at: int
) -> str:
    """A credential for playing ``video_id`` in ``session_id`` until ``expires_at`` (Unix seconds)."""
    if not secret:
        raise ValueError("a playback credential needs a non-empty secret")
    if not 0 <= expires_at <= _MAX_EXPIRES_AT:
        raise ValueError(f"expires_at {expires_at} is out of range")
    body = _BODY.pack(VERSION, expires_at, video_id.bytes)
    return base64.urlsafe_b64encode(body + _mac(secret, session_id, body)).decode("ascii")


def verify_playback_credential(
    secret: str, credential: str, *, session_id: uuid.UUID, now: float | None = None
) -> PlaybackGrant:
    """The grant ``credential`` carries for ``session_id``, or :class:`InvalidPlaybackCredential`
    when it is malformed, signed with another key or for another session, or expired."""
    if not _SHAPE.fullmatch(credential):
        raise InvalidPlaybackCredential()
    try:
        raw = base64.urlsafe_b64decode(credential)
    except (binascii.Error, ValueError):  # pragma: no cover - the shape check admits only valid base64
        raise InvalidPlaybackCredential() from None
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(mac, _mac(secret, session_id, body)):
        raise InvalidPlaybackCredential()
    version, expires_at, video_bytes = _BODY.unpack(body)
    if version != VERSION:
        raise InvalidPlaybackCredential()
    if (time.time() if now is None else now) >= expires_at:
        raise InvalidPlaybackCredential("This playback URL has expired; start a new playback session.")
    return PlaybackGrant(session_id=session_id, video_id=uuid.UUID(bytes=video_bytes), expires_at=expires_at)
