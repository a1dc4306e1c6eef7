"""Storage failures, the same for every backend.

These are infrastructure errors, not HTTP errors: they do not subclass ``common.errors.AppError``.
A caller decides what a missing object or a refused part means for its users (a 404, a 409, a
retry) and translates.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base for every storage failure; ``key`` names the object when there is one."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidKey(StorageError, ValueError):
    """The key is not acceptable: empty, absolute, with ``..`` or hidden segments, too long."""


class ObjectNotFound(StorageError, KeyError):
    """No object under this key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidRange(StorageError, ValueError):
    """A range read starts at or past the end of the object, or ends before it starts."""


class UploadNotFound(StorageError):
    """No multipart upload with this id for this key (never created, completed or aborted)."""


class InvalidPart(StorageError, ValueError):
    """A part list names a part that was not uploaded, has another ETag, or is out of order."""


class PartTooSmall(StorageError, ValueError):
    """A part other than the last is smaller than the backend's ``MIN_PART_SIZE``."""


class StorageUnavailable(StorageError):
    """The store could not be reached or failed on its side (timeouts, 5xx): worth retrying."""
