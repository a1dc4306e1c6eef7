"""What only the local backend promises: files a caller can serve itself, kept inside the root."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.storage import InvalidKey, LocalStorage, PartInfo, UploadNotFound


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

        # The upload record, and the part in the assembly with its index and lock.
        assert files_under(upload_dir) == ["assembly", "assembly.json", "assembly.lock", "upload.json"]
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


KEY = "videos/12/source"
PART = 64 * 1024  # parts of the tests below (MIN_PART_SIZE is lowered to this)


def part_bytes(seed: int, size: int = PART) -> bytes:
    return bytes((i * 13 + seed) % 251 for i in range(size))


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Gate:
    """A part's stream that sends its first half, then waits for ``open`` (or breaks)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.halfway = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = False

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.data[: len(self.data) // 2]
        self.halfway.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("client went away")
        yield self.data[len(self.data) // 2 :]


class TestAssembly:
    """Parts that arrive in order are written once, into the file that becomes the object."""

    @pytest.fixture(params=[True, False], ids=["direct", "cached"])
    async def small_parts(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[LocalStorage]:
        async with LocalStorage(tmp_path / "store", direct_io=request.param) as storage:
            storage.MIN_PART_SIZE = PART
            yield storage

    def assembly(self, local: LocalStorage, upload_id: str) -> Path:
        return local.root / ".multipart" / upload_id / "assembly"

    async def test_parts_in_order_are_renamed_into_place_not_copied(self, small_parts: LocalStorage) -> None:
        local = small_parts
        data = [part_bytes(1), part_bytes(2), b"last"]
        upload_id = await local.create_multipart(KEY, "video/mp4")
        parts = [await local.upload_part(KEY, upload_id, n, part) for n, part in enumerate(data, start=1)]
        assembled = self.assembly(local, upload_id).stat()

        await local.complete_multipart(KEY, upload_id, parts)

        assert local.local_path(KEY).stat().st_ino == assembled.st_ino
        assert local.local_path(KEY).read_bytes() == b"".join(data)
        assert files_under(local.root / ".multipart") == []
        assert files_under(local.root / ".tmp") == []

    async def test_a_part_cut_off_halfway_is_not_counted_and_the_next_try_fits(
        self, small_parts: LocalStorage
    ) -> None:
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        first = await local.upload_part(KEY, upload_id, 1, part_bytes(1))
        broken = Gate(part_bytes(2))
        broken.fail = True
        sending = asyncio.create_task(local.upload_part(KEY, upload_id, 2, broken.stream()))
        await broken.halfway.wait()
        broken.release.set()

        with pytest.raises(RuntimeError):
            await sending
        assert await local.list_parts(KEY, upload_id) == [first]
        assert self.assembly(local, upload_id).stat().st_size == PART

        second = await local.upload_part(KEY, upload_id, 2, part_bytes(2))
        await local.complete_multipart(KEY, upload_id, [first, second])
        assert await local.get(KEY) == part_bytes(1) + part_bytes(2)

    async def test_a_cancelled_part_releases_the_assembly_for_the_next_one(
        self, small_parts: LocalStorage
    ) -> None:
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        first = await local.upload_part(KEY, upload_id, 1, part_bytes(1))
        stalled = Gate(part_bytes(2))
        sending = asyncio.create_task(local.upload_part(KEY, upload_id, 2, stalled.stream()))
        await stalled.halfway.wait()

        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        second = await local.upload_part(KEY, upload_id, 2, part_bytes(3))
        assembled = self.assembly(local, upload_id).stat()
        await local.complete_multipart(KEY, upload_id, [first, second])

        assert local.local_path(KEY).stat().st_ino == assembled.st_ino
        assert await local.get(KEY) == part_bytes(1) + part_bytes(3)

    async def test_bytes_past_the_indexed_parts_as_after_a_crash_are_ignored(
        self, small_parts: LocalStorage
    ) -> None:
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        first = await local.upload_part(KEY, upload_id, 1, part_bytes(1))
        # A process that died while writing part 2 left its bytes, but never indexed them.
        with self.assembly(local, upload_id).open("ab") as assembly:
            assembly.write(b"half of a part" * 1000)

        assert await local.list_parts(KEY, upload_id) == [first]
        second = await local.upload_part(KEY, upload_id, 2, b"short")
        with self.assembly(local, upload_id).open("ab") as assembly:
            assembly.write(b"and again")
        await local.complete_multipart(KEY, upload_id, [first, second])

        assert await local.get(KEY) == part_bytes(1) + b"short"
        head = await local.head(KEY)
        assert head is not None and head.size == PART + 5

    async def test_a_part_sent_while_another_is_being_appended_gets_a_file_of_its_own(
        self, small_parts: LocalStorage
    ) -> None:
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        first = await local.upload_part(KEY, upload_id, 1, part_bytes(1))
        slow = Gate(part_bytes(2))
        sending = asyncio.create_task(local.upload_part(KEY, upload_id, 2, slow.stream()))
        await slow.halfway.wait()

        third = await local.upload_part(KEY, upload_id, 3, b"third")
        # Completing waits for the part being appended rather than reading half of it.
        completing = asyncio.create_task(
            local.complete_multipart(KEY, upload_id, [first, PartInfo(2, md5(part_bytes(2)), PART), third])
        )
        await asyncio.sleep(0.05)
        assert not completing.done()
        slow.release.set()
        second = await sending
        await completing

        assert second == PartInfo(2, md5(part_bytes(2)), PART)
        assert await local.get(KEY) == part_bytes(1) + part_bytes(2) + b"third"

    async def test_a_part_appended_to_an_aborted_upload_is_refused(self, small_parts: LocalStorage) -> None:
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        slow = Gate(part_bytes(1))
        sending = asyncio.create_task(local.upload_part(KEY, upload_id, 1, slow.stream()))
        await slow.halfway.wait()

        await local.abort_multipart(KEY, upload_id)
        slow.release.set()

        with pytest.raises(UploadNotFound):
            await sending
        assert files_under(local.root / ".multipart") == []
        assert await local.list_multipart_uploads() == []

    async def test_a_completion_after_the_assembly_was_already_renamed_is_an_unknown_upload(
        self, small_parts: LocalStorage
    ) -> None:
        # A completion that renamed the assembly but died before removing the upload's folder.
        local = small_parts
        upload_id = await local.create_multipart(KEY)
        part = await local.upload_part(KEY, upload_id, 1, b"whole file")
        self.assembly(local, upload_id).rename(local.root / "elsewhere")

        with pytest.raises(UploadNotFound):
            await local.complete_multipart(KEY, upload_id, [part])
        assert await local.head(KEY) is None

    @pytest.mark.parametrize("refused", ["open", "write"])
    async def test_parts_of_any_size_land_byte_for_byte_also_where_direct_writes_are_refused(
        self, small_parts: LocalStorage, monkeypatch: pytest.MonkeyPatch, refused: str
    ) -> None:
        # Sizes that start and end parts mid-page, and a part smaller than a page.
        sizes = [PART + 1, PART + 4095, PART + 3 * 4096, PART + 4089, 100]
        data = [part_bytes(n, size) for n, size in enumerate(sizes)]
        open_file, pwrite = os.open, os.pwrite

        def refusing_open(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
            if refused == "open" and flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return open_file(path, flags, *args, **kwargs)

        def refusing_pwrite(fd: int, data: bytes, position: int) -> int:
            if refused == "write" and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return pwrite(fd, data, position)

        local = small_parts
        upload_id = await local.create_multipart(KEY)
        first = await local.upload_part(KEY, upload_id, 1, data[0])
        monkeypatch.setattr(os, "open", refusing_open)
        monkeypatch.setattr(os, "pwrite", refusing_pwrite)
        parts = [first] + [
            await local.upload_part(KEY, upload_id, n, chunks(part[:5000], part[5000:]))
            for n, part in enumerate(data[1:], start=2)
        ]
        monkeypatch.undo()
        assembled = self.assembly(local, upload_id).stat()
        await local.complete_multipart(KEY, upload_id, parts)

        assert [p.size for p in parts] == sizes
        assert local.local_path(KEY).stat().st_ino == assembled.st_ino
        assert await local.get(KEY) == b"".join(data)
