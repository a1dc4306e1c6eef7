"""Uploads of a video's source file: resumable (tus) and one-shot, streamed into object storage.

A resumable upload is one multipart upload at ``uploads/{video_id}/source``. Bytes arrive in
PATCH bodies of any size; they are cut into parts of ``part_size`` as they arrive, and whatever
is left at the end of a PATCH that is too small to be a part (S3 wants >= 5 MiB for every part but
the last) is kept as a small *tail* object until the next PATCH. One part is stored while the next
one fills, so a PATCH in flight holds at most two parts in memory (2 x 8 MiB by default), and
nothing ever holds the whole file.

Every step that stores bytes is followed by its own committed transaction moving the upload's
offset (compare-and-set), so the offset a client reads with HEAD only ever counts stored bytes: an
interrupted PATCH resumes from the last stored step. Unlike catalog's other business rules, these
functions therefore take the session *factory* and commit step by step (``commit_hooks.transaction``)
rather than working inside one request transaction.

Writers of one video are serialised by a Redis lock (a second PATCH gets 423 and retries); the
lock is only politeness: part numbers are reserved in the database and tails get fresh keys, so
a writer that lost its lock can never overwrite what another writer recorded.

When the last byte is stored the multipart upload is completed, the content is sniffed with
ffprobe (never trusting a file name or Content-Type), and the video moves to ``processing`` (the
transcode job is queued after that commit) or to ``failed`` with a readable reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.commit_hooks import transaction
from common.media import ProbeError, ProbeResult, ProbeUnavailable, probe
from common.periodic import every
from common.storage import (
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    LocalStorage,
    PartInfo,
    Storage,
    StorageError,
    StorageUnavailable,
)
from common.storage import UploadNotFound as StorageUploadNotFound
from services.catalog import metrics, service
from services.catalog import repository as repo
from services.catalog.errors import (
    IncompleteUpload,
    InvalidTransition,
    LengthRequired,
    NotAVideo,
    NotOwner,
    ProbeFailed,
    StorageDown,
    UploadCompleted,
    UploadExpired,
    UploadInProgress,
    UploadLocked,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLarge,
    VideoNotFound,
)
from services.catalog.models import Upload, UploadState, Video
from services.catalog.service import Actor, OnCommitted
from services.catalog.settings import CatalogSettings

log = structlog.get_logger("catalog")

NOT_A_VIDEO = "The file is not a video we can read."
EMPTY_FILE = "The file is empty."
LOCK_PREFIX = "catalog:upload-lock:"
TAKEN_OVER = "Another request took over this upload; ask for the offset and resume."
# Part numbers kept free for writers that lose a race (their parts are never completed).
SPARE_PART_NUMBERS = 1000
_EXPIRE_BATCH = 100


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_upload_bytes: int
    max_source_put_bytes: int
    part_size: int
    expire_s: int
    probe_timeout_s: float
    # A writer that makes no progress for this long loses its claim on the video's uploads.
    lock_lease_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: CatalogSettings) -> UploadLimits:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            max_source_put_bytes=settings.max_source_put_bytes,
            part_size=settings.upload_part_size,
            expire_s=settings.upload_expire_s,
            probe_timeout_s=settings.probe_timeout_s,
            lock_lease_s=max(settings.upload_idle_timeout_s * 2, 30.0),
        )


@dataclass(frozen=True, slots=True)
class Uploads:
    """What upload work needs; built once at start-up (``app.state.uploads``).

    ``on_uploaded(video_id)`` runs after the commit that moved a video to processing (the app
    passes ``partial(tasks.enqueue_transcode, app.state.arq)``).
    """

    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    redis: Redis
    limits: UploadLimits
    on_uploaded: OnCommitted


# --- keys and sizes -----------------------------------------------------------------------------


def source_key(video_id: uuid.UUID) -> str:
    """The uploaded original, whichever way it arrived."""
    return f"{service.upload_prefix(video_id)}source"


def _new_tail_key(upload: Upload) -> str:
    return f"{service.upload_prefix(upload.video_id)}{upload.id}.tail-{secrets.token_hex(6)}"


def _tail_prefix(upload: Upload) -> str:
    return f"{service.upload_prefix(upload.video_id)}{upload.id}.tail-"


def part_sizes(length: int, configured: int) -> tuple[int, int]:
    """``(part_size, min_part)`` for an upload of ``length`` bytes.

    Full parts are ``part_size``; what is left at the end of a PATCH becomes a part only when it is
    at least ``min_part`` (S3's 5 MiB, more for files so large that 5 MiB parts would run out of
    part numbers), and the tail otherwise.
    """
    min_part = max(MIN_PART_SIZE, -(-length // (MAX_PART_NUMBER - SPARE_PART_NUMBERS)))
    return max(configured, min_part), min_part


def _expires_at(limits: UploadLimits) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=limits.expire_s)


# --- locks ----------------------------------------------------------------------------------------


class _Claim:
    """A video's upload lock, renewed as the holder makes progress (not by a timer, so a stalled
    client does not keep its claim forever)."""

    def __init__(self, lock: Lock, lease_s: float) -> None:
        self.lock = lock
        self.lease_s = lease_s
        self.renewed = time.monotonic()

    async def renew(self) -> None:
        try:
            await self.lock.reacquire()
        except LockError as exc:
            raise UploadLocked(TAKEN_OVER) from exc
        self.renewed = time.monotonic()

    async def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed > self.lease_s / 3:
            await self.renew()


@contextlib.asynccontextmanager
async def _claim(uploads: Uploads, video_id: uuid.UUID) -> AsyncIterator[_Claim]:
    lock = uploads.redis.lock(
        f"{LOCK_PREFIX}{video_id}", timeout=uploads.limits.lock_lease_s, blocking=False, thread_local=False
    )
    if not await lock.acquire():
        raise UploadLocked()
    try:
        yield _Claim(lock, uploads.limits.lock_lease_s)
    finally:
        with contextlib.suppress(LockError):
            await asyncio.shield(lock.release())


@contextlib.asynccontextmanager
async def _storage_failures() -> AsyncIterator[None]:
    """An unreachable store is a 503 the client retries (tus clients do), not a 500."""
    try:
        yield
    except StorageUnavailable as exc:
        log.warning("upload_storage_unavailable", error=str(exc))
        raise StorageDown(headers={"Retry-After": "5"}) from exc


# --- reading uploads -----------------------------------------------------------------------------


async def _owned_upload(session: AsyncSession, upload_id: uuid.UUID, *, actor: Actor) -> Upload:
    """The upload, for its video's creator only: 404 when the caller may not see the video, else 403."""
    upload = await repo.get_upload(session, upload_id)
    if upload is None:
        raise UploadNotFound()
    try:
        video = await service.visible_video(session, upload.video_id, actor=actor)
    except VideoNotFound:
        raise UploadNotFound() from None
    if video.creator_id != actor.user_id:
        raise NotOwner("Only the video's creator may upload its file.")
    return upload


def _check_not_expired(upload: Upload) -> None:
    # An upload with every byte stored does not expire: the sweep completes it instead.
    if (
        upload.state == UploadState.active.value
        and upload.upload_offset < upload.length
        and upload.expires_at <= datetime.now(UTC)
    ):
        raise UploadExpired()


async def get_upload(uploads: Uploads, upload_id: uuid.UUID, *, actor: Actor) -> Upload:
    """The upload's state (tus HEAD): its durable offset and length."""
    async with uploads.sessions() as session:
        upload = await _owned_upload(session, upload_id, actor=actor)
    _check_not_expired(upload)
    return upload


async def _reload(uploads: Uploads, upload_id: uuid.UUID) -> Upload:
    async with uploads.sessions() as session:
        upload = await repo.get_upload(session, upload_id)
    if upload is None:
        raise UploadNotFound()
    return upload


# --- creation -------------------------------------------------------------------------------------


@_storage_failures()
async def create_upload(
    uploads: Uploads, *, actor: Actor, video_id: uuid.UUID, length: int, metadata: str | None
) -> Upload:
    """Start the resumable upload of ``video_id``'s file (tus creation).

    An unfinished upload of the same video is replaced (a client that lost its upload URL starts
    over). A zero-byte file is refused at once: the video fails with a reason.
    """
    if length > uploads.limits.max_upload_bytes:
        raise UploadTooLarge(
            f"The file is larger than the {uploads.limits.max_upload_bytes} bytes allowed.",
            max_bytes=uploads.limits.max_upload_bytes,
        )
    async with uploads.sessions() as session:
        await service.authorize_upload(session, video_id, actor=actor)
    async with _claim(uploads, video_id):
        async with uploads.sessions() as session:
            await service.authorize_upload(session, video_id, actor=actor)
            existing = await repo.get_upload_for_video(session, video_id)
        if existing is not None:
            if existing.state != UploadState.active.value:
                raise UploadCompleted()
            await _discard(uploads, existing, abandon_video=False)
        key = source_key(video_id)
        multipart_id = await uploads.storage.create_multipart(key) if length > 0 else None
        try:
            async with transaction(uploads.sessions) as session:
                await service.mark_upload_started(session, video_id)
                upload = await repo.insert_upload(
                    session,
                    video_id=video_id,
                    creator_id=actor.user_id,
                    state=UploadState.active.value,
                    length=length,
                    storage_key=key,
                    multipart_id=multipart_id,
                    upload_metadata=metadata,
                    expires_at=_expires_at(uploads.limits),
                )
        except BaseException as exc:
            if multipart_id is not None:
                with contextlib.suppress(StorageError):
                    await asyncio.shield(uploads.storage.abort_multipart(key, multipart_id))
            if isinstance(exc, IntegrityError):  # another creation won a race the lock missed
                raise UploadInProgress() from exc
            raise
        log.info("upload_created", upload_id=str(upload.id), video_id=str(video_id), length=length)
        metrics.count_upload_started("tus")
        if length == 0:
            return await _hand_off(uploads, upload, verdict=EMPTY_FILE)
    return upload


# --- PATCH: appending bytes -------------------------------------------------------------------------


class _Pending:
    """Received bytes not stored yet, kept as the chunks they arrived in: cutting a part off joins
    them once. (A growing bytearray copied every byte twice, into it and out of it, and was
    reallocated from small to a whole part for every part.)"""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(bytes(chunk))  # no copy for bytes, which is what servers hand out
            self._size += len(chunk)

    def take(self, size: int) -> bytes:
        """The first ``size`` bytes, removed."""
        taken: list[bytes] = []
        left = size
        while left > 0:
            chunk = self._chunks[0]
            if len(chunk) <= left:
                taken.append(self._chunks.popleft())
                left -= len(chunk)
            else:
                taken.append(chunk[:left])
                self._chunks[0] = chunk[left:]
                left = 0
        self._size -= size
        return b"".join(taken)

    def peek(self) -> bytes:
        """All of it, kept."""
        return b"".join(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0


class _PartWriter:
    """Cuts the bytes of one PATCH into stored parts, keeping a too-small remainder as the tail.

    One part is stored while the next one fills (the network read and the storage write overlap),
    so a PATCH holds at most two parts in memory. Parts are recorded strictly in order.
    """

    def __init__(self, uploads: Uploads, upload: Upload, claim: _Claim) -> None:
        self.uploads = uploads
        self.upload = upload
        self.claim = claim
        self.part_size, self.min_part = part_sizes(upload.length, uploads.limits.part_size)
        self.buffer = _Pending()
        # Absolute offset of buffer[0]; the durable tail (if any) is the buffer's first bytes.
        self.buffer_start = upload.upload_offset - upload.tail_size
        self.durable = upload.upload_offset
        # The part being stored and recorded while the next one fills.
        self.in_flight: asyncio.Task[None] | None = None

    @property
    def storage(self) -> Storage:
        return self.uploads.storage

    async def load_tail(self) -> None:
        """Start the buffer with the stored tail (at most ``min_part`` bytes)."""
        size, key = self.upload.tail_size, self.upload.tail_key
        if size == 0:
            return
        try:
            if key is None:
                raise StorageError("no tail key recorded")
            async for chunk in self.storage.stream(key, start=0, end=size - 1):
                self.buffer.append(chunk)
        except StorageError:
            log.warning("upload_tail_lost", upload_id=str(self.upload.id))
            self.buffer.clear()
        if len(self.buffer) != size:
            # The tail is gone or short: forget it, so the client resends those bytes.
            await self._record(to_offset=self.buffer_start, tail_size=0, tail_key=None, part=None)
            raise UploadOffsetMismatch(
                "Some stored bytes were lost; ask for the offset and resume from there.",
                offset=self.buffer_start,
            )

    async def write(self, chunk: bytes) -> None:
        self.buffer.append(chunk)
        # Full parts go out as they fill, but never the final one: it is stored by ``finish``.
        while len(self.buffer) >= self.part_size and self.buffer_start + self.part_size < self.upload.length:
            await self._send_part(self.part_size)
        await self.claim.renew_if_due()

    async def finish(self) -> Upload:
        """Store what is left: the final part, a part big enough, or the new tail."""
        end = self.buffer_start + len(self.buffer)
        if self.buffer and (end == self.upload.length or len(self.buffer) >= self.min_part):
            await self._send_part(len(self.buffer))
        await self._settle()
        if end > self.durable:
            await self._store_tail()
        return self.upload

    async def close(self) -> None:
        """Wait for a part still being stored (after an error); it is simply never recorded."""
        if self.in_flight is not None:
            await asyncio.gather(self.in_flight, return_exceptions=True)
            self.in_flight = None

    async def _send_part(self, size: int) -> None:
        """Cut ``size`` bytes off the buffer and start storing them as the next part."""
        upload = self.upload
        assert upload.multipart_id is not None
        data = self.buffer.take(size)
        self.buffer_start += size
        await self._settle()
        await self.claim.renew()
        async with transaction(self.uploads.sessions) as session:
            number = await repo.reserve_part_number(session, upload.id)
        if number is None:
            raise UploadNotFound()
        if number > MAX_PART_NUMBER:
            raise UploadTooLarge("This upload was sent in too many pieces; start it again.")
        self.in_flight = asyncio.create_task(self._store_part(number, data, end=self.buffer_start))

    async def _store_part(self, number: int, data: bytes, *, end: int) -> None:
        """Store one part, then record it: from then on its bytes count (HEAD shows them)."""
        upload = self.upload
        assert upload.multipart_id is not None
        info = await self.storage.upload_part(upload.storage_key, upload.multipart_id, number, data)
        del data
        await self._record(
            to_offset=end,
            tail_size=0,
            tail_key=None,
            part={"part_number": info.part_number, "etag": info.etag, "size": info.size},
        )

    async def _settle(self) -> None:
        """Wait until the part in flight is stored and recorded (parts are recorded in order)."""
        if self.in_flight is not None:
            task, self.in_flight = self.in_flight, None
            await task

    async def _store_tail(self) -> None:
        await self.claim.renew()
        key = _new_tail_key(self.upload)
        await self.storage.put(key, self.buffer.peek())
        try:
            await self._record(
                to_offset=self.buffer_start + len(self.buffer),
                tail_size=len(self.buffer),
                tail_key=key,
                part=None,
            )
        except BaseException:
            with contextlib.suppress(StorageError):
                await asyncio.shield(self.storage.delete(key))
            raise

    async def _record(
        self, *, to_offset: int, tail_size: int, tail_key: str | None, part: dict[str, object] | None
    ) -> None:
        previous_tail = self.upload.tail_key
        async with transaction(self.uploads.sessions) as session:
            updated = await repo.advance_upload(
                session,
                self.upload.id,
                from_offset=self.durable,
                to_offset=to_offset,
                tail_size=tail_size,
                tail_key=tail_key,
                part=part,
                expires_at=_expires_at(self.uploads.limits),
            )
        if updated is None:
            async with self.uploads.sessions() as session:
                gone = await repo.get_upload(session, self.upload.id) is None
            raise UploadNotFound() if gone else UploadLocked(TAKEN_OVER)
        self.upload = updated
        self.durable = to_offset
        if previous_tail is not None and previous_tail != tail_key:
            with contextlib.suppress(StorageError):
                await self.storage.delete(previous_tail)


@_storage_failures()
async def append_to_upload(
    uploads: Uploads,
    upload_id: uuid.UUID,
    *,
    actor: Actor,
    offset: int,
    content_length: int | None,
    body: AsyncIterable[bytes],
) -> Upload:
    """Store the bytes of one PATCH from ``offset`` (which must be the server's offset).

    Everything that arrives is stored, also when the body ends early (the client went away), so the
    next PATCH resumes after it. The final byte completes the upload and hands the file over.
    """
    async with uploads.sessions() as session:
        upload = await _owned_upload(session, upload_id, actor=actor)
    _check_append(upload, offset=offset, content_length=content_length)
    async with _claim(uploads, upload.video_id) as claim:
        upload = await _reload(uploads, upload_id)
        _check_append(upload, offset=offset, content_length=content_length)
        if upload.state == UploadState.completed.value:
            return upload
        writer = _PartWriter(uploads, upload, claim)
        try:
            await writer.load_tail()
            received = 0
            async for chunk in body:
                received += len(chunk)
                if offset + received > upload.length:
                    # Bytes not yet stored are dropped; the offset stays at the last stored step.
                    raise UploadTooLarge("The request carries more bytes than the upload's Upload-Length.")
                await writer.write(chunk)
                metrics.TUS_BYTES.inc(len(chunk))
            upload = await writer.finish()
        finally:
            await writer.close()
        if upload.upload_offset == upload.length:
            upload = await _complete(uploads, upload, claim)
    return upload


def _check_append(upload: Upload, *, offset: int, content_length: int | None) -> None:
    _check_not_expired(upload)
    if offset != upload.upload_offset:
        raise UploadOffsetMismatch(offset=upload.upload_offset)
    if content_length is not None and offset + content_length > upload.length:
        raise UploadTooLarge(
            "The request carries more bytes than the upload's Upload-Length.", length=upload.length
        )


# --- completion --------------------------------------------------------------------------------------


async def _complete(uploads: Uploads, upload: Upload, claim: _Claim | None) -> Upload:
    """Every byte is stored: join the parts, sniff the file and hand it to the video's lifecycle."""
    storage = uploads.storage
    if upload.multipart_id is not None:
        parts = [PartInfo(**part) for part in sorted(upload.parts, key=lambda p: p["part_number"])]
        if claim is not None:
            await claim.renew()
        try:
            await storage.complete_multipart(upload.storage_key, upload.multipart_id, parts)
        except StorageUploadNotFound:
            # Completed by an earlier attempt that failed before recording it (e.g. ffprobe was
            # unavailable); the object is what that attempt joined.
            info = await storage.head(upload.storage_key)
            if info is None or info.size != upload.length:
                raise
    try:
        result = await sniff(storage, upload.storage_key, timeout_s=uploads.limits.probe_timeout_s)
    except ProbeUnavailable as exc:
        log.warning("upload_probe_unavailable", upload_id=str(upload.id), error=str(exc))
        # Every byte is stored, and a tus client that asks for the offset now considers the upload
        # done: let the next expiry sweep finish the hand-off rather than waiting for the deadline.
        async with transaction(uploads.sessions) as session:
            await repo.set_upload_expiry(session, upload.id, datetime.now(UTC))
        raise ProbeFailed() from exc
    verdict = result if isinstance(result, str) else None
    completed = await _hand_off(uploads, upload, verdict=verdict)
    with contextlib.suppress(StorageError):
        await storage.delete_prefix(_tail_prefix(upload))
    return completed


async def _hand_off(uploads: Uploads, upload: Upload, *, verdict: str | None) -> Upload:
    """Mark the upload completed and move the video on: processing, or failed with ``verdict``."""
    async with transaction(uploads.sessions) as session:
        completed = await repo.complete_upload(session, upload.id)
        if completed is None:  # completed (or terminated) by someone else meanwhile
            current = await repo.get_upload(session, upload.id)
            if current is None:
                raise UploadNotFound()
            return current
        try:
            if verdict is None:
                await service.mark_uploaded(
                    session, upload.video_id, source_key=upload.storage_key, on_committed=uploads.on_uploaded
                )
            else:
                await service.fail_upload(session, upload.video_id, reason=verdict)
        except (InvalidTransition, VideoNotFound):
            # The video moved on (deleted, or uploaded another way); the upload is still done.
            log.warning("upload_video_moved_on", upload_id=str(upload.id), video_id=str(upload.video_id))
    log.info(
        "upload_completed",
        upload_id=str(upload.id),
        video_id=str(upload.video_id),
        length=upload.length,
        accepted=verdict is None,
        reason=verdict,
    )
    metrics.count_upload_completed("tus", accepted=verdict is None)
    return completed


async def sniff(storage: Storage, key: str, *, timeout_s: float) -> ProbeResult | str:
    """What ffprobe finds in the stored object: a result for a readable video, else a reason.

    Raises :class:`ProbeUnavailable` when ffprobe itself could not run (worth retrying).
    """
    try:
        result = await _probe_object(storage, key, timeout_s=timeout_s)
    except ProbeError as exc:
        log.info("upload_not_media", key=key, detail=exc.detail)
        return EMPTY_FILE if exc.reason == EMPTY_FILE else NOT_A_VIDEO
    if not result.is_playable_video:
        log.info("upload_without_video", key=key, format=result.format_name, has_video=result.has_video)
        return NOT_A_VIDEO
    return result


async def _probe_object(storage: Storage, key: str, *, timeout_s: float) -> ProbeResult:
    if isinstance(storage, LocalStorage):
        return await probe(storage.local_path(key), timeout_s=timeout_s)
    info = await storage.head(key)
    if info is None or info.size == 0:
        raise ProbeError(EMPTY_FILE)
    # ffprobe reads only the bytes it needs (with range requests) straight from the store.
    url = await storage.presign_get(key, int(timeout_s) + 60)
    if url is not None:
        return await probe(url, timeout_s=timeout_s)
    # A store without URLs: copy to a temporary file, a chunk at a time.
    handle, path = tempfile.mkstemp(prefix="probe-")
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in storage.stream(key):
                await asyncio.to_thread(out.write, chunk)
        return await probe(path, timeout_s=timeout_s)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# --- termination and expiry -------------------------------------------------------------------------


@_storage_failures()
async def terminate_upload(uploads: Uploads, upload_id: uuid.UUID, *, actor: Actor) -> None:
    """Drop an unfinished upload and its stored bytes (tus termination); the video awaits a new upload."""
    async with uploads.sessions() as session:
        upload = await _owned_upload(session, upload_id, actor=actor)
    if upload.state != UploadState.active.value:
        raise UploadCompleted("This upload is complete; delete the video instead.")
    async with _claim(uploads, upload.video_id):
        upload = await _reload(uploads, upload_id)
        if upload.state != UploadState.active.value:
            raise UploadCompleted("This upload is complete; delete the video instead.")
        await _discard(uploads, upload, abandon_video=True)
    log.info("upload_terminated", upload_id=str(upload_id), video_id=str(upload.video_id))


async def _discard(uploads: Uploads, upload: Upload, *, abandon_video: bool) -> bool:
    """Forget an active upload, then drop its multipart upload and tail objects.

    The row goes first: if removing the stored bytes fails, they are orphans that the expiry sweep
    finds (``expire_abandoned_uploads``), never bytes an upload still counts on.
    """
    async with transaction(uploads.sessions) as session:
        removed = await repo.delete_upload(session, upload.id, state=UploadState.active)
        if removed and abandon_video:
            with contextlib.suppress(InvalidTransition, VideoNotFound):
                await service.mark_upload_abandoned(session, upload.video_id)
    if not removed:
        return False
    try:
        if upload.multipart_id is not None:
            await uploads.storage.abort_multipart(upload.storage_key, upload.multipart_id)
        await uploads.storage.delete_prefix(_tail_prefix(upload))
    except StorageError:
        log.exception("upload_objects_orphaned", upload_id=str(upload.id), key=upload.storage_key)
    return True


async def expire_abandoned_uploads(uploads: Uploads, *, now: datetime | None = None) -> int:
    """Expire uploads nobody wrote to before their deadline; returns how many were dropped.

    Each one's multipart upload is aborted and its video goes back to ``awaiting_upload``. An upload
    with every byte stored (its hand-off failed, e.g. ffprobe was down) is completed instead. Then
    multipart uploads under ``uploads/`` that no active upload knows and that are older than the
    expiry (a crash between creating one and recording it) are aborted too. Safe to run on every
    replica at once: each upload is handled under its video's lock.
    """
    now = now or datetime.now(UTC)
    async with uploads.sessions() as session:
        expired = await repo.list_expired_uploads(session, now=now, limit=_EXPIRE_BATCH)
    dropped = 0
    for candidate in expired:
        try:
            async with _claim(uploads, candidate.video_id) as claim:
                async with uploads.sessions() as session:
                    upload = await repo.get_upload(session, candidate.id)
                if upload is None or upload.state != UploadState.active.value or upload.expires_at >= now:
                    continue
                if upload.length > 0 and upload.upload_offset == upload.length:
                    # Every byte arrived but the hand-off failed (e.g. ffprobe was down): finish it.
                    try:
                        await _complete(uploads, upload, claim)
                        continue
                    except StorageError:
                        log.exception("upload_completion_failed", upload_id=str(upload.id))
                if await _discard(uploads, upload, abandon_video=True):
                    dropped += 1
                    log.info("upload_expired", upload_id=str(upload.id), video_id=str(upload.video_id))
        except (UploadLocked, ProbeFailed, UploadNotFound):
            continue  # being written right now, to be completed on a later sweep, or gone
    cutoff = now - timedelta(seconds=uploads.limits.expire_s)
    dropped += await _abort_orphaned_multiparts(uploads, older_than=cutoff)
    return dropped


async def _abort_orphaned_multiparts(uploads: Uploads, *, older_than: datetime) -> int:
    candidates = [
        upload
        for upload in await uploads.storage.list_multipart_uploads("uploads/")
        if upload.initiated_at < older_than
    ]
    if not candidates:
        return 0
    async with uploads.sessions() as session:
        in_use = await repo.multipart_ids_in_use(session, [c.upload_id for c in candidates])
    aborted = 0
    for orphan in candidates:
        if orphan.upload_id in in_use:
            continue
        with contextlib.suppress(StorageError):
            await uploads.storage.abort_multipart(orphan.key, orphan.upload_id)
            aborted += 1
            log.info("upload_orphan_aborted", key=orphan.key)
    return aborted


async def run_expiry_sweeps(uploads: Uploads, *, interval_s: float) -> None:
    """Expire abandoned uploads every ``interval_s`` seconds, until cancelled (the app's lifespan)."""

    async def sweep() -> None:
        dropped = await expire_abandoned_uploads(uploads)
        if dropped:
            log.info("upload_expiry_sweep", dropped=dropped)

    await every(interval_s, sweep, failure="upload_expiry_sweep_failed")


# --- one-shot PUT ------------------------------------------------------------------------------------


@_storage_failures()
async def put_source(
    uploads: Uploads,
    video_id: uuid.UUID,
    *,
    actor: Actor,
    content_length: int | None,
    body: AsyncIterable[bytes],
) -> Video:
    """Store a small file in one request, then sniff it and hand it over (PUT /videos/{id}/source).

    Raises :class:`NotAVideo` (after recording the video as failed) when the bytes are not a
    video; a body shorter than Content-Length leaves the video awaiting its upload.
    """
    async with uploads.sessions() as session:
        await service.authorize_upload(session, video_id, actor=actor)
    if content_length is None:
        raise LengthRequired()
    if content_length > uploads.limits.max_source_put_bytes:
        raise UploadTooLarge(
            f"Files larger than {uploads.limits.max_source_put_bytes} bytes must use a resumable upload.",
            max_bytes=uploads.limits.max_source_put_bytes,
        )
    key = source_key(video_id)
    async with _claim(uploads, video_id) as claim:
        async with transaction(uploads.sessions) as session:
            await service.authorize_upload(session, video_id, actor=actor)
            if await repo.get_upload_for_video(session, video_id) is not None:
                raise UploadInProgress()
            await service.mark_upload_started(session, video_id)
        metrics.count_upload_started("put")
        try:
            if content_length > 0:
                await uploads.storage.put(key, _exactly(body, content_length, claim))
                result = await sniff(uploads.storage, key, timeout_s=uploads.limits.probe_timeout_s)
            else:
                result = EMPTY_FILE
        except BaseException as exc:
            await asyncio.shield(_abandon_put(uploads, video_id, key))
            if isinstance(exc, ProbeUnavailable):
                raise ProbeFailed("We could not check the file right now; upload it again later.") from exc
            raise
        async with transaction(uploads.sessions) as session:
            if isinstance(result, str):
                video = await service.fail_upload(session, video_id, reason=result)
            else:
                video = await service.mark_uploaded(
                    session, video_id, source_key=key, on_committed=uploads.on_uploaded
                )
    log.info("source_uploaded", video_id=str(video_id), length=content_length, accepted=video.status)
    metrics.count_upload_completed("put", accepted=not isinstance(result, str))
    if isinstance(result, str):
        raise NotAVideo(result, video_id=str(video_id))
    return video


async def _exactly(body: AsyncIterable[bytes], length: int, claim: _Claim) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > length:
            raise UploadTooLarge("The body is longer than its Content-Length.")
        metrics.PUT_BYTES.inc(len(chunk))
        yield chunk
        await claim.renew_if_due()
    if received < length:
        raise IncompleteUpload(received=received, expected=length)


async def _abandon_put(uploads: Uploads, video_id: uuid.UUID, key: str) -> None:
    with contextlib.suppress(StorageError):
        await uploads.storage.delete(key)
    with contextlib.suppress(InvalidTransition, VideoNotFound):
        async with transaction(uploads.sessions) as session:
            await service.mark_upload_abandoned(session, video_id)
