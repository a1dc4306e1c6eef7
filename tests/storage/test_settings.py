"""Choosing and opening a store from settings; how an unreachable S3 shows up."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.storage import (
    LocalStorage,
    S3Storage,
    StorageSettings,
    StorageUnavailable,
    storage_from_settings,
)
from tests.fixtures_s3 import S3Server, unique_bucket


class TestStorageFromSettings:
    async def test_the_default_is_a_local_directory(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("STORAGE_BACKEND", "STORAGE_LOCAL_DIR"):
            monkeypatch.delenv(name, raising=False)

        settings = StorageSettings()

        assert settings.storage_backend == "local"
        assert settings.storage_local_dir == Path(".data/storage")

    async def test_local_settings_open_a_local_store_that_creates_its_folder(self, tmp_path: Path) -> None:
        settings = StorageSettings(storage_backend="local", storage_local_dir=tmp_path / "objects")

        async with storage_from_settings(settings, ensure_bucket=True) as storage:
            assert isinstance(storage, LocalStorage)
            await storage.put("k", b"v")

        assert (tmp_path / "objects" / "k").read_bytes() == b"v"

    async def test_s3_settings_from_the_environment_open_an_s3_store_and_create_its_bucket(
        self, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bucket = unique_bucket()
        for name, value in s3_server.env(bucket).items():
            monkeypatch.setenv(name, value)

        settings = StorageSettings()
        async with storage_from_settings(settings, ensure_bucket=True) as storage:
            assert isinstance(storage, S3Storage)
            assert (storage.bucket, settings.s3_path_style) == (bucket, True)
            await storage.put("k", b"v")
            await storage.ensure_bucket()  # a second call finds the bucket and leaves it be
            assert await storage.get("k") == b"v"

        assert settings.s3_secret_access_key is not None
        assert "test-secret-key" not in repr(settings)

    async def test_the_bucket_can_live_in_another_region(self, s3_server: S3Server) -> None:
        settings = s3_server.settings().model_copy(update={"s3_region": "eu-west-1"})

        async with storage_from_settings(settings, ensure_bucket=True) as storage:
            await storage.put("k", b"v")
            assert await storage.exists("k")

    async def test_an_unknown_backend_is_refused_at_load_time(self) -> None:
        with pytest.raises(ValueError, match="storage_backend"):
            StorageSettings(storage_backend="ftp")


class TestUnreachableS3:
    async def test_a_dead_endpoint_raises_storage_unavailable_so_callers_can_retry(self) -> None:
        from tests.fixtures_s3 import _free_port

        storage = S3Storage(
            bucket="nowhere",
            endpoint_url=f"http://127.0.0.1:{_free_port()}",
            access_key_id="k",
            secret_access_key="s",
            path_style=True,
            max_attempts=1,
            connect_timeout_s=2,
        )
        async with storage:
            with pytest.raises(StorageUnavailable):
                await storage.put("k", b"v")
            with pytest.raises(StorageUnavailable):
                await storage.head("k")

    async def test_a_closed_store_says_so(self) -> None:
        storage = S3Storage(bucket="b", endpoint_url="http://127.0.0.1:9")

        with pytest.raises(RuntimeError, match="not open"):
            await storage.get("k")
