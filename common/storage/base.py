"""The storage interface every backend implements, its value types and its key rules.

Keys are plain relative paths (``videos/42/master.m3u8``); what they mean is the caller's business.
Both backends accept the same keys, refuse the same parts and raise the same errors, so code
written against :class:`Storage` runs unchanged on a laptop directory and on S3.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from common.storage.errors import InvalidKey, InvalidPart, InvalidRange

MiB = 1024 * 1024

# S3's rule: every part of a multipart upload but the last must hold at least 5 MiB. It is checked
# when the upload is completed (S3 cannot know earlier which part is the last); the local backend
# enforces the same rule at the same moment so that code tested on one works on the other.
MIN_PART_SIZE = 5 * MiB
MAX_PART_NUMBER = 10_000
# Part size ``put`` uses when it turns a long stream into a multipart upload.
DEFAULT_PART_SIZE = 8 * MiB
MAX_KEY_BYTES = 1024
# Longest presigned URL lifetime S3 accepts with SigV4 (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_CONTENT_TYPE = "application/octet-stream"

Data = bytes | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object.

    ``content_type`` is ``None`` in :meth:`Storage.list` results (S3 listings do not carry it);
    ``last_modified`` is ``None`` right after a ``put`` (S3 does not return it there).
    ``etag`` never carries S3's surrounding quotes.
    """

    key: str
    size: int
    etag: str
    content_type: str | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One uploaded part of a multipart upload; hand these back to ``complete_multipart``."""

    part_number: int
    etag: str
    size: int


class MultipartUpload(NamedTuple):
    """An upload in progress: ``(key, upload_id, initiated_at)``; ``initiated_at`` is aware (UTC)."""

    key: str
    upload_id: str
    initiated_at: datetime


@runtime_checkable
class Storage(Protocol):
    """An object store. Open it with ``async with`` (or ``storage_from_settings``) and close it."""

    MIN_PART_SIZE: int

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def aclose(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    async def ensure_bucket(self) -> None:
        """Create the bucket (S3) or the root directory (local) when it is missing."""
        ...

    async def put(self, key: str, data: Data, content_type: str | None = None) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any object there; a stream is never held whole."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object, for small objects only (playlists, manifests); use ``stream`` for media."""
        ...

    def stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The object's bytes ``start..end`` inclusive (HTTP ``Range`` semantics); errors on first read."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size, content type and ETag of the object, or ``None`` when there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (non-empty); returns how many."""
        ...

    def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        """Objects whose key starts with ``prefix`` (a plain string prefix), in key order."""
        ...

    async def create_multipart(self, key: str, content_type: str | None = None) -> str:
        """Start a multipart upload to ``key``; returns its upload id."""
        ...

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: Data) -> PartInfo:
        """Store part ``part_number`` (1..10000), replacing an earlier part with that number."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        """The parts uploaded so far, by part number (to resume an interrupted upload)."""
        ...

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        """Join ``parts`` (ascending part numbers) into the object; all but the last >= MIN_PART_SIZE."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; aborting an unknown or finished upload is not an error."""
        ...

    async def list_multipart_uploads(self, prefix: str = "") -> builtins.list[MultipartUpload]:
        """Uploads in progress under ``prefix``, to expire abandoned ones."""
        ...

    async def presign_get(self, key: str, expires_s: int, *, public: bool = False) -> str | None:
        """A URL anyone can GET for ``expires_s`` seconds, or ``None`` when the backend has none.
        ``public``: the URL goes to a browser or app, so it names the store's public address
        (``S3_PUBLIC_ENDPOINT_URL``) rather than the one the services use inside the network."""
        ...


def validate_key(key: str) -> str:
    """``key`` when it is a clean relative path, else :class:`InvalidKey` saying why.

    Segments may not be empty, ``.``, ``..`` or start with a dot: hidden names are reserved for the
    local backend's own bookkeeping, and the rule holds on S3 too so both accept the same keys.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("storage key must be a non-empty string", key=key if isinstance(key, str) else None)
    _check_chars(key, what="key")
    if key.endswith("/"):
        raise InvalidKey(f"storage key {key!r} must not end with '/'", key=key)
    for segment in key.split("/"):
        _check_segment(key, segment, what="key")
    return key


def validate_prefix(prefix: str, *, allow_empty: bool = True) -> str:
    """A listing prefix: the rules of :func:`validate_key`, but it may end with ``/`` or be empty."""
    if not isinstance(prefix, str):
        raise InvalidKey("storage prefix must be a string")
    if not prefix:
        if allow_empty:
            return prefix
        raise InvalidKey("an empty prefix would select every object; name a prefix")
    _check_chars(prefix, what="prefix")
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()
    for segment in segments:
        _check_segment(prefix, segment, what="prefix")
    return prefix


def _check_chars(value: str, *, what: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"storage {what} is longer than {MAX_KEY_BYTES} bytes", key=value)
    if value.startswith("/"):
        raise InvalidKey(f"storage {what} {value!r} must be relative, not start with '/'", key=value)
    if "\\" in value:
        raise InvalidKey(f"storage {what} {value!r} must use '/' as separator, not '\\'", key=value)
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidKey(f"storage {what} {value!r} contains control characters", key=value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"storage {what} {value!r} is not valid UTF-8", key=value) from exc


def _check_segment(value: str, segment: str, *, what: str) -> None:
    if segment == "":
        raise InvalidKey(f"storage {what} {value!r} has an empty path segment ('//')", key=value)
    if segment in (".", ".."):
        raise InvalidKey(f"storage {what} {value!r} may not contain '.' or '..' segments", key=value)
    if segment.startswith("."):
        raise InvalidKey(
            f"storage {what} {value!r} may not contain hidden ('.'-prefixed) segments", key=value
        )


def validate_range(start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """Check a ``start..end`` inclusive byte range before either backend is asked."""
    if start is not None and start < 0:
        raise InvalidRange(f"range start {start} is negative")
    if end is not None and end < 0:
        raise InvalidRange(f"range end {end} is negative")
    if start is not None and end is not None and end < start:
        raise InvalidRange(f"range end {end} is before its start {start}")
    return start, end


def validate_part_number(part_number: int) -> int:
    if isinstance(part_number, bool) or not isinstance(part_number, int):
        raise InvalidPart(f"part number must be an integer, got {part_number!r}")
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise InvalidPart(f"part number {part_number} is outside 1..{MAX_PART_NUMBER}")
    return part_number


def validate_part_list(parts: Sequence[PartInfo]) -> Sequence[PartInfo]:
    """Parts for ``complete_multipart``: at least one, part numbers strictly ascending (S3's rule)."""
    if not parts:
        raise InvalidPart("a multipart upload needs at least one part to complete")
    previous = 0
    for part in parts:
        validate_part_number(part.part_number)
        if part.part_number <= previous:
            raise InvalidPart("parts must be listed in strictly ascending part-number order")
        previous = part.part_number
    return parts


def validate_expiry(expires_s: int) -> int:
    if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires_s must be within 1..{MAX_PRESIGN_SECONDS} seconds")
    return expires_s


def strip_etag(etag: str) -> str:
    """S3 wraps ETags in double quotes; the interface hands them out bare."""
    return etag.strip('"')


async def iter_data(data: Data) -> AsyncIterator[bytes]:
    """Chunks of ``data``, whether it came as bytes or as an async stream (empty chunks dropped)."""
    if isinstance(data, bytes | bytearray | memoryview):
        if data:
            yield bytes(data)
        return
    async for chunk in data:
        if chunk:
            yield bytes(chunk)


async def read_all(data: Data) -> bytes:
    """All of ``data`` in memory: only for one bounded part or a small object."""
    if isinstance(data, bytes):
        return data
    buffer = bytearray()
    async for chunk in iter_data(data):
        buffer += chunk
    return bytes(buffer)
