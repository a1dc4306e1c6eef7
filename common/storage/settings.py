"""Which store to use, from the environment, and the one place that opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.storage.base import Storage
from common.storage.local import LocalStorage
from common.storage.s3 import S3Storage

StorageBackend = Literal["local", "s3"]


class StorageSettings(BaseSettings):
    """STORAGE_BACKEND, STORAGE_LOCAL_DIR, S3_*: read without a service prefix, because every
    component (catalog, streaming, the transcoder) must point at the same store.

    A service embeds it as ``storage: StorageSettings = Field(default_factory=StorageSettings)``
    or builds one explicitly in tests.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    storage_backend: StorageBackend = "local"
    # Relative to the working directory: `make run` starts in the repository root.
    storage_local_dir: Path = Path(".data/storage")
    s3_endpoint_url: str | None = None
    # Where browsers and apps reach the same store, when not at S3_ENDPOINT_URL (compose's
    # http://minio:9000 is an address only the services can resolve): segment redirects and
    # thumbnails are signed for it.
    s3_public_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "streamify"
    # Unset keys fall back to botocore's credential chain (environment, profile, instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_path_style: bool = False


class HasStorageSettings(Protocol):
    """Anything carrying the storage fields: a StorageSettings or a service settings class with them."""

    @property
    def storage_backend(self) -> StorageBackend: ...
    @property
    def storage_local_dir(self) -> Path: ...
    @property
    def s3_endpoint_url(self) -> str | None: ...
    @property
    def s3_public_endpoint_url(self) -> str | None: ...
    @property
    def s3_region(self) -> str: ...
    @property
    def s3_bucket(self) -> str: ...
    @property
    def s3_access_key_id(self) -> str | None: ...
    @property
    def s3_secret_access_key(self) -> SecretStr | None: ...
    @property
    def s3_path_style(self) -> bool: ...


def build_storage(settings: HasStorageSettings) -> LocalStorage | S3Storage:
    """The configured backend, not yet opened (S3 needs ``async with`` or ``await open()``)."""
    if settings.storage_backend == "local":
        return LocalStorage(settings.storage_local_dir)
    if settings.storage_backend == "s3":
        secret = settings.s3_secret_access_key
        return S3Storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            public_endpoint_url=settings.s3_public_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            path_style=settings.s3_path_style,
        )
    raise ValueError(f"unknown STORAGE_BACKEND {settings.storage_backend!r} (expected 'local' or 's3')")


@asynccontextmanager
async def storage_from_settings(
    settings: HasStorageSettings | None = None, *, ensure_bucket: bool = False
) -> AsyncIterator[Storage]:
    """Open the configured store for a lifespan and close it afterwards.

    ``async with storage_from_settings(settings.storage) as storage: app.state.storage = storage``.
    ``ensure_bucket=True`` creates the bucket (or local folder) when missing.
    """
    async with build_storage(settings if settings is not None else StorageSettings()) as storage:
        if ensure_bucket:
            await storage.ensure_bucket()
        yield storage
