"""Object storage with one small interface and two backends: a local directory and S3.

    async with storage_from_settings(StorageSettings()) as storage:
        await storage.put("thumbnails/42.jpg", jpeg, content_type="image/jpeg")

Keys are plain relative paths; their layout belongs to the caller. See :class:`Storage`.
"""

from common.storage.base import (
    DEFAULT_PART_SIZE,
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    Data,
    MultipartUpload,
    ObjectInfo,
    PartInfo,
    Storage,
    validate_key,
    validate_prefix,
)
from common.storage.errors import (
    InvalidKey,
    InvalidPart,
    InvalidRange,
    ObjectNotFound,
    PartTooSmall,
    StorageError,
    StorageUnavailable,
    UploadNotFound,
)
from common.storage.local import LocalStorage
from common.storage.s3 import S3Storage
from common.storage.settings import StorageBackend, StorageSettings, build_storage, storage_from_settings

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PART_NUMBER",
    "MIN_PART_SIZE",
    "Data",
    "InvalidKey",
    "InvalidPart",
    "InvalidRange",
    "LocalStorage",
    "MultipartUpload",
    "ObjectInfo",
    "ObjectNotFound",
    "PartInfo",
    "PartTooSmall",
    "S3Storage",
    "Storage",
    "StorageBackend",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "UploadNotFound",
    "build_storage",
    "storage_from_settings",
    "validate_key",
    "validate_prefix",
]
