"""What only the local backend promises: files a caller can serve itself, kept inside the root."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.storage import InvalidKey, LocalStorage


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    async with LocalStorage(tmp_path / "store") as storage:
        yield storage


def files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


class TestLocalPath:
    async def test_an_object_is_a_plain_file_at_its_key(self, local: LocalStorage) -> None:
        await local.put("videos/1/master.m3u8", b"#EXTM3U\n")

        path = local.local_path("videos/1/master.m3u8")

        assert path == local.root / "videos" / "1" / "master.m3u8"
        assert path.read_bytes() == b"#EXTM3U\n"

    async def test_the_backend_works_without_ensure_bucket(self, tmp_path: Path) -> None:
        async with LocalStorage(tmp_path / "fresh") as storage:
            await storage.put("a/b", b"x")
            upload_id = await storage.create_multipart("c")
            await storage.abort_multipart("c", upload_id)

            assert await storage.get("a/b") == b"x"

    @pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd"])
    async def test_keys_escaping_the_root_are_refused_and_nothing_is_written(
        self, local: LocalStorage, tmp_path: Path, key: str
    ) -> None:
        with pytest.raises(InvalidKey):
            local.local_path(key)
        with pytest.raises(InvalidKey):
            await local.put(key, b"x")

        assert files_under(tmp_path) == []

    async def test_a_symlink_inside_the_root_cannot_lead_outside_it(
        self, local: LocalStorage, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        await local.ensure_bucket()
        os.symlink(outside, local.root / "link")

        with pytest.raises(InvalidKey, match="outside the storage root"):
            await local.put("link/file", b"x")

        assert list(outside.iterdir()) == []


class TestLayout:
    async def test_writes_leave_no_temporary_files_behind(self, local: LocalStorage) -> None:
        async def broken() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("stream broke")

        await local.put("ok", b"done")
        with pytest.raises(RuntimeError):
            await local.put("broken", broken())

        assert files_under(local.root / ".tmp") == []
        assert not local.local_path("broken").exists()

    async def test_parts_live_in_a_hidden_folder_that_is_removed_on_complete(
        self, local: LocalStorage
    ) -> None:
        upload_id = await local.create_multipart("videos/2/source")
        part = await local.upload_part("videos/2/source", upload_id, 1, b"tiny")
        upload_dir = local.root / ".multipart" / upload_id

        assert len(files_under(upload_dir)) == 2  # the upload record and one part
        assert [info.key async for info in local.list()] == []

        await local.complete_multipart("videos/2/source", upload_id, [part])

        assert not upload_dir.exists()
        assert [info.key async for info in local.list()] == ["videos/2/source"]

    async def test_deleting_the_last_object_of_a_folder_removes_the_folder(self, local: LocalStorage) -> None:
        await local.put("videos/3/360p/seg_000.ts", b"x")
        await local.put("videos/4/master.m3u8", b"x")

        await local.delete_prefix("videos/3/")

        assert not (local.root / "videos" / "3").exists()
        assert (local.root / "videos" / "4" / "master.m3u8").exists()

    async def test_a_key_that_is_already_a_folder_is_refused_clearly(self, local: LocalStorage) -> None:
        # S3 allows both "a" and "a/b"; a filesystem cannot, so the local backend says so.
        await local.put("videos/5/master.m3u8", b"x")

        with pytest.raises(InvalidKey, match="conflicts"):
            await local.put("videos/5", b"x")
        with pytest.raises(InvalidKey, match="conflicts"):
            await local.put("videos/5/master.m3u8/child", b"x")
        assert await local.get("videos/5/master.m3u8") == b"x"

    async def test_a_file_dropped_in_by_hand_is_still_described(self, local: LocalStorage) -> None:
        await local.ensure_bucket()
        (local.root / "manual.bin").write_bytes(b"12345")

        head = await local.head("manual.bin")

        assert head is not None
        assert (head.size, head.content_type) == (5, "application/octet-stream")
