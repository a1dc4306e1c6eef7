"""Object storage in a local directory: the default for ``make run`` and for development.

Layout under ``root``::

    <key>                               the object's bytes (so a caller can sendfile it)
    .meta/<key>.json                    content type, ETag and size
    .multipart/<upload_id>/upload.json  key, content type, start time of a multipart upload
    .multipart/<upload_id>/assembly     parts that arrived in ascending order, back to back
    .multipart/<upload_id>/assembly.json which parts the assembly holds: number, offset, size, MD5
    .multipart/<upload_id>/assembly.lock flock'ed by whoever writes the assembly or its index
    .multipart/<upload_id>/<nnnnn>.<md5> one uploaded part that arrived out of order
    .tmp/                               writes in progress, renamed into place when whole

Every write goes to a temporary file and is renamed over the target, so a reader sees the old
object or the new one, never half of one. File I/O runs in worker threads, never on the loop.

Multipart uploads usually send their parts in ascending order (tus does), so such a part is
written straight into the upload's assembly file after the parts before it, and only then entered
in the assembly's index (replaced atomically): bytes the index does not list do not count, so a
part cut off halfway is never part of the upload. Completing with exactly the assembled parts,
in order, renames the assembly into place: each byte is written once. Any other part (out of
order, or a part number sent again) is a file of its own, and completing with such parts copies
them all into a new file, as S3 semantics need. A part number lives in one place: when the index
lists it, the index's copy is the current one.

Appends bypass the page cache (``O_DIRECT``, whole pages through a reused aligned buffer; the rest,
and filesystems that refuse it, through the cache): an uploaded video is written once and read
back later by ffprobe and the transcoder, so caching it only evicts what is being served, and
filling the cache with fresh pages was the costliest part of a write (measured in
docs/performance.md).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple, Self

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
ASSEMBLY_FILE = "assembly"
ASSEMBLY_INDEX = "assembly.json"
ASSEMBLY_LOCK = "assembly.lock"
# Writes are gathered into blocks of this size before a worker thread writes them out, so a
# stream of small chunks costs one thread hop per MiB, not one per chunk (bigger chunks go as
# they are).
WRITE_BLOCK = 1024 * 1024
READ_BLOCK = 1024 * 1024
# Direct writes cover whole pages only, so a page is written either directly or through the page
# cache, never both (the partial pages where one part meets the next go through the cache).
DIRECT_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PART_FILE = re.compile(r"^(\d{5})\.([0-9a-f]{32})$")


def _md5() -> Any:
    # MD5 is what S3 uses for ETags; it is a checksum here, not a security measure.
    return hashlib.md5(usedforsecurity=False)


class LocalStorage:
    """A :class:`~common.storage.base.Storage` kept in a directory on this machine."""

    MIN_PART_SIZE = MIN_PART_SIZE

    def __init__(self, root_dir: str | os.PathLike[str], *, direct_io: bool = True) -> None:
        self.root = Path(root_dir).expanduser().resolve()
        # Whether parts are appended to the assembly with O_DIRECT where the filesystem allows it.
        self.direct_io = direct_io and _O_DIRECT != 0

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

    async def presign_get(self, key: str, expires_s: int, *, public: bool = False) -> str | None:
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
        """Append the part to the upload's assembly when it comes after every assembled part (and
        no other part is being appended); otherwise store it as a file of its own."""
        validate_key(key)
        validate_part_number(part_number)
        folder, _ = await asyncio.to_thread(self._upload, key, upload_id)
        try:
            appender = await asyncio.to_thread(_PartAppender.start, folder, part_number, self.direct_io)
        except FileNotFoundError:
            raise UploadNotFound(f"multipart upload {upload_id!r} for {key!r} was aborted", key=key) from None
        if appender is not None:
            try:
                async for block in _blocks(data):
                    await asyncio.to_thread(appender.write, block)
                try:
                    return await asyncio.to_thread(appender.commit)
                except FileNotFoundError:
                    raise UploadNotFound(
                        f"multipart upload {upload_id!r} for {key!r} was aborted", key=key
                    ) from None
            finally:
                # Synchronous on purpose: it must run (and release the lock) even when cancelled.
                appender.close()
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
            assembly = _Assembly(folder)
            if number not in assembly.read_index():
                _replace_part_file(folder, tmp, number, digest)
                return
            # The part is sent again: its new bytes become its own file, then the index forgets the
            # assembled copy (until then the index's copy is the current one, as if not yet sent).
            with assembly.locked():
                _replace_part_file(folder, tmp, number, digest)
                placed = assembly.read_index()
                if placed.pop(number, None) is not None:
                    assembly.write_index(placed)
        except FileNotFoundError:
            raise UploadNotFound(f"multipart upload {upload_id!r} for {key!r} was aborted", key=key) from None

    async def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        validate_key(key)
        return await asyncio.to_thread(self._list_parts, key, upload_id)

    def _list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        folder, _ = self._upload(key, upload_id)
        placed = _Assembly(folder).read_index()
        parts = [PartInfo(part_number=n, etag=p.etag, size=p.size) for n, p in placed.items()]
        for entry in os.scandir(folder):
            match = _PART_FILE.match(entry.name)
            if match and int(match[1]) not in placed:
                parts.append(PartInfo(part_number=int(match[1]), etag=match[2], size=entry.stat().st_size))
        return sorted(parts, key=lambda part: part.part_number)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        """Rename the assembly into place when it holds exactly these parts in order; otherwise
        copy the parts one by one into a temporary object and rename that into place."""
        path = self.local_path(key)
        validate_part_list(parts)
        return await asyncio.to_thread(self._complete, key, path, upload_id, builtins.list(parts))

    def _complete(self, key: str, path: Path, upload_id: str, parts: builtins.list[PartInfo]) -> ObjectInfo:
        folder, record = self._upload(key, upload_id)
        assembly = _Assembly(folder)
        try:
            # Waits for a part being appended, so the index read here stays true until the end.
            with assembly.locked():
                info = self._complete_locked(key, path, upload_id, parts, assembly, record)
        except FileNotFoundError:
            raise UploadNotFound(
                f"multipart upload {upload_id!r} for {key!r} was completed or aborted", key=key
            ) from None
        shutil.rmtree(folder, ignore_errors=True)
        return info

    def _complete_locked(
        self,
        key: str,
        path: Path,
        upload_id: str,
        parts: builtins.list[PartInfo],
        assembly: _Assembly,
        record: dict[str, Any],
    ) -> ObjectInfo:
        placed = assembly.read_index()
        sources: builtins.list[_Source] = []
        for part in parts:
            etag = part.etag.strip('"').lower()
            entry = placed.get(part.part_number)
            if entry is not None and entry.etag == etag:
                sources.append(_Source(None, entry.offset, entry.size, etag))
                continue
            file = assembly.folder / f"{part.part_number:05d}.{etag}"
            if entry is not None or not _PART_FILE.match(file.name) or not file.is_file():
                raise InvalidPart(
                    f"part {part.part_number} with ETag {part.etag!r} was not uploaded to {upload_id!r}",
                    key=key,
                )
            sources.append(_Source(file, 0, file.stat().st_size, etag))
        for part, source in zip(parts[:-1], sources[:-1], strict=True):
            if source.size < self.MIN_PART_SIZE:
                raise PartTooSmall(
                    f"part {part.part_number} holds {source.size} bytes; every part but the last needs "
                    f"at least {self.MIN_PART_SIZE} bytes",
                    key=key,
                )
        # S3's multipart ETag: MD5 of the parts' binary MD5s, then '-' and the number of parts.
        combined = _md5()
        for source in sources:
            combined.update(bytes.fromhex(source.etag))
        size = sum(source.size for source in sources)
        info = ObjectInfo(
            key=key,
            size=size,
            etag=f"{combined.hexdigest()}-{len(parts)}",
            content_type=record.get("content_type"),
        )
        if _back_to_back(sources):
            self._commit_assembly(key, path, assembly, placed, info)
        else:
            self._commit_copy(key, path, assembly, sources, info)
        return info

    def _commit_assembly(
        self, key: str, path: Path, assembly: _Assembly, placed: dict[int, _Placed], info: ObjectInfo
    ) -> None:
        """The assembly starts with exactly the completed parts: cut off the rest, rename it."""
        with open(assembly.path, "r+b") as file:
            if os.fstat(file.fileno()).st_size < info.size:
                # Only a completion that renamed the assembly and then failed to clean up leaves an
                # index without its file.
                raise FileNotFoundError(assembly.path)
            if os.fstat(file.fileno()).st_size > info.size:
                # Parts after the completed ones are discarded (as on S3); the index forgets them
                # first so that it never lists bytes the file no longer has.
                kept = {n: p for n, p in placed.items() if p.offset + p.size <= info.size}
                if kept != placed:
                    assembly.write_index(kept)
                file.truncate(info.size)
        self._ensure_dirs()
        # On failure the assembly stays where it is: the upload is still whole and can be retried.
        self._commit(key, path, assembly.path, info)

    def _commit_copy(
        self, key: str, path: Path, assembly: _Assembly, sources: builtins.list[_Source], info: ObjectInfo
    ) -> None:
        self._ensure_dirs()
        fd, name = tempfile.mkstemp(dir=self.root / TMP_DIR)
        tmp = Path(name)
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(os.fdopen(fd, "wb"))
                assembled: IO[bytes] | None = None
                for source in sources:
                    if source.file is None:
                        if assembled is None:
                            assembled = stack.enter_context(open(assembly.path, "rb"))
                        _copy_range(assembled, source.offset, source.size, out)
                    else:
                        with source.file.open("rb") as part:
                            _copy_range(part, 0, source.size, out)
            self._commit(key, path, tmp, info)
        except BaseException:
            _unlink_quietly(tmp)
            raise

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
        async for block in _blocks(data):
            await asyncio.to_thread(_write_block, out, digest, block)
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


async def _blocks(data: Data) -> AsyncIterator[bytes]:
    """``data`` in blocks of at least WRITE_BLOCK bytes (the last may be shorter); a chunk that
    big already passes through as it is, without a copy."""
    block = bytearray()
    async for chunk in iter_data(data):
        if not block and len(chunk) >= WRITE_BLOCK:
            yield chunk
            continue
        block += chunk
        if len(block) >= WRITE_BLOCK:
            yield bytes(block)
            block.clear()
    if block:
        yield bytes(block)


def _copy_range(source: IO[bytes], offset: int, size: int, out: IO[bytes]) -> None:
    source.seek(offset)
    left = size
    while left > 0:
        chunk = source.read(min(READ_BLOCK, left))
        if not chunk:
            raise StorageError(f"{source.name} ends {left} bytes early")
        out.write(chunk)
        left -= len(chunk)


def _replace_part_file(folder: Path, tmp: Path, number: int, digest: str) -> None:
    for old in folder.glob(f"{number:05d}.*"):
        _unlink_quietly(old)
    os.replace(tmp, folder / f"{number:05d}.{digest}")


class _Placed(NamedTuple):
    """Where an assembled part's bytes are in the assembly file."""

    offset: int
    size: int
    etag: str


class _Source(NamedTuple):
    """A part named in a completion: a range of the assembly (``file`` None) or a file of its own."""

    file: Path | None
    offset: int
    size: int
    etag: str


def _back_to_back(sources: list[_Source]) -> bool:
    """Whether the parts are all assembled, in this order, from the assembly's first byte on."""
    offset = 0
    for source in sources:
        if source.file is not None or source.offset != offset:
            return False
        offset += source.size
    return True


class _Assembly:
    """One upload's assembly file, its index and its lock (see the module docstring).

    The lock (``flock`` on a file of its own, so it works across processes) is held by a part
    being appended for as long as it is written, and by whoever changes the index or completes.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / ASSEMBLY_FILE

    def lock(self, *, wait: bool) -> int | None:
        """The locked descriptor to close to unlock; None when ``wait`` is off and it is taken.

        FileNotFoundError when the upload is gone (also when it went while this waited)."""
        fd = os.open(self.folder / ASSEMBLY_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not (self.folder / UPLOAD_FILE).is_file():
                raise FileNotFoundError(self.folder / UPLOAD_FILE)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock (waiting for it) for the block."""
        fd = self.lock(wait=True)
        assert fd is not None
        try:
            yield
        finally:
            os.close(fd)

    def read_index(self) -> dict[int, _Placed]:
        record = _read_json(self.folder / ASSEMBLY_INDEX)
        if record is None:
            return {}
        return {
            int(n): _Placed(int(offset), int(size), str(etag)) for n, offset, size, etag in record["parts"]
        }

    def write_index(self, placed: dict[int, _Placed]) -> None:
        rows = [[n, *placed[n]] for n in sorted(placed)]
        _write_text_atomically(self.folder / ASSEMBLY_INDEX, json.dumps({"parts": rows}), self.folder)


class _PartAppender:
    """One part being written into the assembly after every assembled part; holds the lock.

    ``write`` and ``commit`` run in worker threads, and ``close`` runs on the loop, also after a
    cancellation while one of them is still running: ``_io`` keeps them apart, so a descriptor is
    never closed under a write and the lock is never released under an index update.
    """

    def __init__(
        self, assembly: _Assembly, lock_fd: int, placed: dict[int, _Placed], number: int, direct: bool
    ) -> None:
        self.assembly = assembly
        self.lock_fd = lock_fd
        self.placed = placed
        self.number = number
        self.offset = max((p.offset + p.size for p in placed.values()), default=0)
        self.size = 0
        self.digest = _md5()
        self._io = threading.Lock()
        self.fd = os.open(assembly.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.direct_fd = -1
        self.bounce: mmap.mmap | None = None
        if direct:
            try:
                self.direct_fd = os.open(assembly.path, os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this filesystem does not do O_DIRECT
                    os.close(self.fd)
                    raise
            else:
                self.bounce = _take_bounce_buffer()

    @classmethod
    def start(cls, folder: Path, number: int, direct: bool) -> _PartAppender | None:
        """An appender for part ``number``, or None when the part has to be a file of its own:
        it does not come after every assembled part, or another part is being appended."""
        assembly = _Assembly(folder)
        lock_fd = assembly.lock(wait=False)
        if lock_fd is None:
            return None
        try:
            placed = assembly.read_index()
            if number > max(placed, default=0):
                return cls(assembly, lock_fd, placed, number, direct)
        except BaseException:
            os.close(lock_fd)
            raise
        os.close(lock_fd)
        return None

    def write(self, block: bytes) -> None:
        with self._io:
            if self.fd < 0:
                raise StorageError(f"part {self.number} was abandoned while it was written")
            position = self.offset + self.size
            with memoryview(block) as view:
                done = 0
                if self.direct_fd >= 0:
                    head = -position % DIRECT_ALIGN
                    pages = (len(view) - head) // DIRECT_ALIGN * DIRECT_ALIGN
                    if pages > 0:
                        _pwrite_all(self.fd, view[:head], position)
                        self._write_direct(view[head : head + pages], position + head)
                        done = head + pages
                _pwrite_all(self.fd, view[done:], position + done)
            self.digest.update(block)
            self.size += len(block)

    def _write_direct(self, pages: memoryview, position: int) -> None:
        assert self.bounce is not None
        done = 0
        while done < len(pages):
            length = min(len(self.bounce), len(pages) - done)
            self.bounce[:length] = pages[done : done + length]
            try:
                with memoryview(self.bounce) as aligned:
                    _pwrite_all(self.direct_fd, aligned[:length], position + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # The device wants a coarser alignment: the rest of this part goes through the cache.
                self._stop_direct()
                _pwrite_all(self.fd, pages[done:], position + done)
                return
            done += length

    def _stop_direct(self) -> None:
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1
        if self.bounce is not None:
            _give_bounce_buffer(self.bounce)
            self.bounce = None

    def commit(self) -> PartInfo:
        """Enter the written part in the index: from now on it counts."""
        with self._io:
            if self.fd < 0:
                raise StorageError(f"part {self.number} was abandoned while it was written")
            self._stop_direct()
            os.close(self.fd)
            self.fd = -1
            info = PartInfo(part_number=self.number, etag=self.digest.hexdigest(), size=self.size)
            self.assembly.write_index(
                {**self.placed, self.number: _Placed(self.offset, self.size, info.etag)}
            )
            # A copy sent earlier out of order is no longer the current one.
            for old in self.assembly.folder.glob(f"{self.number:05d}.*"):
                _unlink_quietly(old)
            return info

    def close(self) -> None:
        """Release the lock; bytes written but not entered in the index are cut off again."""
        with self._io:
            self._stop_direct()
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.offset)
                os.close(self.fd)
                self.fd = -1
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], position + done)


# Page-aligned buffers for direct writes, kept for the next part: a fresh one would cost a page
# fault per page on each use.
_bounce_buffers: list[mmap.mmap] = []
_bounce_lock = threading.Lock()
_MAX_IDLE_BOUNCE_BUFFERS = 4


def _take_bounce_buffer() -> mmap.mmap:
    with _bounce_lock:
        if _bounce_buffers:
            return _bounce_buffers.pop()
    return mmap.mmap(-1, WRITE_BLOCK)


def _give_bounce_buffer(buffer: mmap.mmap) -> None:
    with _bounce_lock:
        if len(_bounce_buffers) < _MAX_IDLE_BOUNCE_BUFFERS:
            _bounce_buffers.append(buffer)
            return
    buffer.close()


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
