"""Object storage in a local directory: the default for ``make run`` and for development.

Layout under ``root``::

    <key>                               the object's bytes (so a caller can sendfile it)
    .meta/<key>.json                    content type, ETag and size
    .multipart/<upload_id>/upload.json  key, content type, start time of a multipart upload
    .multipart/<upload_id>/<nnnnn>.<md5> one uploaded part
    .tmp/                               writes in progress, renamed into place when whole

Every write goes to a temporary file and is renamed over the target, so a reader sees the old
object or the new one, never half of one. File I/O runs in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from common.storage.base import (
    DEFAULT_CONTENT_TYPE,
    MIN_PART_SIZE,
    Data,
    MultipartUpload,
    ObjectInfo,
    PartInfo,
    iter_data,
    validate_expiry,
    validate_key,
    validate_part_list,
    validate_part_number,
    validate_prefix,
    validate_range,
)
from common.storage.errors import (
    InvalidKey,
    InvalidPart,
    InvalidRange,
    ObjectNotFound,
    PartTooSmall,
    StorageError,
    UploadNotFound,
)

META_DIR = ".meta"
MULTIPART_DIR = ".multipart"
TMP_DIR = ".tmp"
UPLOAD_FILE = "upload.json"
# Writes are gathered into blocks of this size before a worker thread writes them out, so a
# stream of small chunks costs one thread hop per MiB, not one per chunk.
WRITE_BLOCK = 1024 * 1024
READ_BLOCK = 1024 * 1024
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PART_FILE = re.compile(r"^(\d{5})\.([0-9a-f]{32})$")


def _md5() -> Any:
    # MD5 is what S3 uses for ETags; it is a checksum here, not a security measure.
    return hashlib.md5(usedforsecurity=False)


class LocalStorage:
    """A :class:`~common.storage.base.Storage` kept in a directory on this machine."""

    MIN_PART_SIZE = MIN_PART_SIZE

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: files are opened and closed per call."""

    async def ensure_bucket(self) -> None:
        """Create the root directory and the backend's own hidden directories."""
        await asyncio.to_thread(self._ensure_dirs)

    def _ensure_dirs(self) -> None:
        for sub in (TMP_DIR, META_DIR, MULTIPART_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------

    def local_path(self, key: str) -> Path:
        """Where the object under ``key`` lives (whether or not it exists): for sendfile responses."""
        validate_key(key)
        path = self.root.joinpath(*key.split("/"))
        # validate_key already refuses '..' and absolute keys; this also catches a symlink placed
        # inside the root that points out of it.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} resolves outside the storage root", key=key)
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root.joinpath(META_DIR, *key.split("/")).with_name(key.rsplit("/", 1)[-1] + ".json")

    def _upload_dir(self, upload_id: str) -> Path:
        return self.root / MULTIPART_DIR / upload_id

    # -- objects ---------------------------------------------------------------------------

    async def put(self, key: str, data: Data, content_type: str | None = None) -> ObjectInfo:
        """Write ``data`` to a temporary file, then rename it over the object."""
        path = self.local_path(key)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        await asyncio.to_thread(self._ensure_dirs)
        tmp, size, digest = await _write_temp(self.root / TMP_DIR, data)
        try:
            info = ObjectInfo(key=key, size=size, etag=digest, content_type=content_type)
            await asyncio.to_thread(self._commit, key, path, tmp, info)
        except BaseException:
            await asyncio.to_thread(_unlink_quietly, tmp)
            raise
        return info

    def _commit(self, key: str, path: Path, tmp: Path, info: ObjectInfo) -> None:
        meta = json.dumps({"content_type": info.content_type, "etag": info.etag, "size": info.size})
        for attempt in range(3):
            try:
                self._meta_path(key).parent.mkdir(parents=True, exist_ok=True)
                _write_text_atomically(self._meta_path(key), meta, self.root / TMP_DIR)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                return
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
                raise InvalidKey(
                    f"storage key {key!r} conflicts with an existing object or prefix on the local "
                    "filesystem (one key cannot be both an object and a folder)",
                    key=key,
                ) from exc
            except FileNotFoundError:
                # A concurrent delete pruned the now-empty parent folder between mkdir and rename.
                if attempt == 2:
                    raise

    async def get(self, key: str) -> bytes:
        path = self.local_path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object under {key!r}", key=key) from None

    async def stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        path = self.local_path(key)
        validate_range(start, end)
        try:
            handle: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object under {key!r}", key=key) from None
        try:
            size = os.fstat(handle.fileno()).st_size
            first = 0 if start is None else start
            if (start is not None or end is not None) and first >= size:
                raise InvalidRange(
                    f"range starts at {first}, past the end of {key!r} ({size} bytes)", key=key
                )
            last = size - 1 if end is None else min(end, size - 1)
            remaining = last - first + 1
            if first:
                handle.seek(first)
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_BLOCK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.local_path(key)
        return await asyncio.to_thread(self._head, key, path, with_content_type=True)

    def _head(self, key: str, path: Path, *, with_content_type: bool) -> ObjectInfo | None:
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        meta = _read_json(self._meta_path(key))
        if meta is None or meta.get("size") != stat.st_size:
            # A file put there by hand (or a write that lost its metadata): describe it anyway.
            meta = {"content_type": DEFAULT_CONTENT_TYPE, "etag": f"{stat.st_size:x}-{stat.st_mtime_ns:x}"}
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=str(meta["etag"]),
            content_type=str(meta["content_type"]) if with_content_type else None,
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        await asyncio.to_thread(self._delete, key, path)

    def _delete(self, key: str, path: Path) -> bool:
        try:
            if not path.is_file():
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        meta = self._meta_path(key)
        _unlink_quietly(meta)
        self._prune(path.parent, self.root)
        self._prune(meta.parent, self.root / META_DIR)
        return True

    def _prune(self, folder: Path, stop: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) ``stop``, as S3 has none."""
        while folder != stop and folder.is_relative_to(stop):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix, allow_empty=False)
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _delete_prefix(self, prefix: str) -> int:
        return sum(1 for key, path in self._scan(prefix) if self._delete(key, path))

    async def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        validate_prefix(prefix)
        infos = await asyncio.to_thread(self._list, prefix)
        for info in infos:
            yield info

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        infos = []
        for key, path in self._scan(prefix):
            info = self._head(key, path, with_content_type=False)
            if info is not None:
                infos.append(info)
        return infos

    def _scan(self, prefix: str) -> builtins.list[tuple[str, Path]]:
        """Keys starting with ``prefix`` (a string prefix, like S3's), in S3's order."""
        folder = prefix if prefix.endswith("/") else prefix.rpartition("/")[0]
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        found: builtins.list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            # Hidden names are never keys: they hold this backend's bookkeeping.
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    found.append((key, Path(dirpath, name)))
        # Code-point order is UTF-8 byte order, which is how S3 sorts keys.
        found.sort(key=lambda item: item[0])
        return found

    async def presign_get(self, key: str, expires_s: int) -> str | None:
        """No URLs here: the caller serves ``local_path(key)`` itself."""
        validate_key(key)
        validate_expiry(expires_s)
        return None

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str, content_type: str | None = None) -> str:
        validate_key(key)
        upload_id = uuid.uuid4().hex
        record = {
            "key": key,
            "content_type": content_type or DEFAULT_CONTENT_TYPE,
            "initiated_at": datetime.now(UTC).isoformat(),
        }
        await asyncio.to_thread(self._create_upload, upload_id, json.dumps(record))
        return upload_id

    def _create_upload(self, upload_id: str, record: str) -> None:
        self._ensure_dirs()
        folder = self._upload_dir(upload_id)
        folder.mkdir()
        _write_text_atomically(folder / UPLOAD_FILE, record, folder)

    def _upload(self, key: str, upload_id: str) -> tuple[Path, dict[str, Any]]:
        """The upload's folder and record, or UploadNotFound (also for a foreign key or odd id)."""
        if isinstance(upload_id, str) and _UPLOAD_ID.match(upload_id):
            folder = self._upload_dir(upload_id)
            record = _read_json(folder / UPLOAD_FILE)
            if record is not None and record.get("key") == key:
                return folder, record
        raise UploadNotFound(f"no multipart upload {upload_id!r} for {key!r}", key=key)

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: Data) -> PartInfo:
        validate_key(key)
        validate_part_number(part_number)
        folder, _ = await asyncio.to_thread(self._upload, key, upload_id)
        tmp, size, digest = await _write_temp(folder, data)
        try:
            await asyncio.to_thread(self._commit_part, key, upload_id, folder, tmp, part_number, digest)
        except BaseException:
            await asyncio.to_thread(_unlink_quietly, tmp)
            raise
        return PartInfo(part_number=part_number, etag=digest, size=size)

    def _commit_part(
        self, key: str, upload_id: str, folder: Path, tmp: Path, number: int, digest: str
    ) -> None:
        try:
            for old in folder.glob(f"{number:05d}.*"):
                _unlink_quietly(old)
            os.replace(tmp, folder / f"{number:05d}.{digest}")
        except FileNotFoundError:
            raise UploadNotFound(f"multipart upload {upload_id!r} for {key!r} was aborted", key=key) from None

    async def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        validate_key(key)
        return await asyncio.to_thread(self._list_parts, key, upload_id)

    def _list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        folder, _ = self._upload(key, upload_id)
        parts = []
        for entry in os.scandir(folder):
            match = _PART_FILE.match(entry.name)
            if match:
                number, digest = match.groups()
                parts.append(PartInfo(part_number=int(number), etag=digest, size=entry.stat().st_size))
        return sorted(parts, key=lambda part: part.part_number)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        """Concatenate the parts file by file into a temporary object, then rename it into place."""
        path = self.local_path(key)
        validate_part_list(parts)
        return await asyncio.to_thread(self._complete, key, path, upload_id, builtins.list(parts))

    def _complete(self, key: str, path: Path, upload_id: str, parts: builtins.list[PartInfo]) -> ObjectInfo:
        folder, record = self._upload(key, upload_id)
        files = []
        for part in parts:
            etag = part.etag.strip('"').lower()
            file = folder / f"{part.part_number:05d}.{etag}"
            if not _PART_FILE.match(file.name) or not file.is_file():
                raise InvalidPart(
                    f"part {part.part_number} with ETag {part.etag!r} was not uploaded to {upload_id!r}",
                    key=key,
                )
            files.append(file)
        sizes = [file.stat().st_size for file in files]
        for part, size in zip(parts[:-1], sizes[:-1], strict=True):
            if size < self.MIN_PART_SIZE:
                raise PartTooSmall(
                    f"part {part.part_number} holds {size} bytes; every part but the last needs at least "
                    f"{self.MIN_PART_SIZE} bytes",
                    key=key,
                )
        # S3's multipart ETag: MD5 of the parts' binary MD5s, then '-' and the number of parts.
        combined = _md5()
        for file in files:
            combined.update(bytes.fromhex(file.suffix[1:]))
        etag = f"{combined.hexdigest()}-{len(parts)}"
        self._ensure_dirs()
        fd, name = tempfile.mkstemp(dir=self.root / TMP_DIR)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                for file in files:
                    with file.open("rb") as source:
                        shutil.copyfileobj(source, out, READ_BLOCK)
            info = ObjectInfo(key=key, size=sum(sizes), etag=etag, content_type=record.get("content_type"))
            self._commit(key, path, tmp, info)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        return info

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self._abort, key, upload_id)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            folder, _ = self._upload(key, upload_id)
        except UploadNotFound:
            return
        shutil.rmtree(folder, ignore_errors=True)

    async def list_multipart_uploads(self, prefix: str = "") -> builtins.list[MultipartUpload]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list_uploads, prefix)

    def _list_uploads(self, prefix: str) -> builtins.list[MultipartUpload]:
        uploads = []
        base = self.root / MULTIPART_DIR
        if not base.is_dir():
            return []
        for entry in os.scandir(base):
            record = _read_json(Path(entry.path, UPLOAD_FILE)) if _UPLOAD_ID.match(entry.name) else None
            if record is not None and str(record["key"]).startswith(prefix):
                started = datetime.fromisoformat(record["initiated_at"])
                uploads.append(MultipartUpload(record["key"], entry.name, started))
        return sorted(uploads, key=lambda upload: (upload.key, upload.initiated_at))


async def _write_temp(folder: Path, data: Data) -> tuple[Path, int, str]:
    """Write ``data`` into a new temporary file in ``folder``: (path, size, MD5 hex)."""
    try:
        fd, name = await asyncio.to_thread(tempfile.mkstemp, dir=folder, prefix="tmp-")
    except FileNotFoundError:
        raise StorageError(f"storage folder {folder} disappeared") from None
    tmp = Path(name)
    digest = _md5()
    size = 0
    out = os.fdopen(fd, "wb")
    try:
        block = bytearray()
        async for chunk in iter_data(data):
            block += chunk
            if len(block) >= WRITE_BLOCK:
                await asyncio.to_thread(_write_block, out, digest, bytes(block))
                size += len(block)
                block.clear()
        if block:
            await asyncio.to_thread(_write_block, out, digest, bytes(block))
            size += len(block)
        await asyncio.to_thread(out.close)
    except BaseException:
        out.close()
        _unlink_quietly(tmp)
        raise
    return tmp, size, digest.hexdigest()


def _write_block(out: IO[bytes], digest: Any, block: bytes) -> None:
    out.write(block)
    digest.update(block)


def _write_text_atomically(path: Path, text: str, tmp_dir: Path) -> None:
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(name, path)
    except BaseException:
        _unlink_quietly(Path(name))
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
