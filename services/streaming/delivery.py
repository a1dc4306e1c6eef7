"""HLS delivery per playback session: playlists from storage, segments redirected or sent.

    GET /playback/sessions/{session_id}/{credential}/master.m3u8
    GET /playback/sessions/{session_id}/{credential}/{rendition}/{file}   (index.m3u8, seg_NNNNN.ts)

The transcoder writes ``videos/{id}/master.m3u8`` naming ``<rendition>/index.m3u8``, and each of
those names ``seg_NNNNN.ts`` next to it (SPEC §5; ``transcoder.ffmpeg``). All URIs are relative, so
once a player has the master under the session path every later URL resolves under it too, with
the credential in it: the playlists are served exactly as stored.

Every request, in order (nothing here waits on a database):

1. the names are checked strictly (a rendition like ``720p``; ``index.m3u8`` or ``seg_00042.ts``),
   so nothing from the path reaches a storage key unchecked;
2. the credential is verified (an HMAC; bound to the session and the video) — 403;
3. the live session state is read from Redis (hash ``streaming:session:{id}``; the reads of
   concurrent requests share one round trip) and kept here for at most ``STATE_TTL_S`` (1 s), so
   a state change (payment required, ended) takes effect within a second: 402 / 410;
4. the file must be one the video's playlists name (the playlists are cached here briefly), so a
   segment that does not exist is a 404 without asking the store;
5. playlists are sent from here (small, ``no-store``); a segment is a redirect to a presigned URL
   (S3: the bytes never pass through Python; presigned URLs are reused for half their lifetime,
   presigning costs CPU) or, with the local backend, a file response.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from cachetools import TLRUCache, TTLCache
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.routing import Route

from common.errors import AppError, NotFound, ServiceUnavailable
from common.storage import LocalStorage, ObjectNotFound, Storage, StorageError
from services.streaming.credentials import InvalidPlaybackCredential, verify_playback_credential

log = structlog.get_logger("streaming.delivery")

SESSION_KEY_PREFIX = "streaming:session:"
MASTER_NAME = "master.m3u8"
PLAYLIST_NAME = "index.m3u8"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
# Rendition folders are named by their short side (transcoder.ladder): 360p ... 1080p, or a small
# source's own size. Segments: transcoder.ffmpeg.SEGMENT_PATTERN (seg_%05d.ts; more digits after
# 99999 segments).
RENDITION = re.compile(r"[1-9][0-9]{0,4}p")
SEGMENT = re.compile(r"seg_[0-9]{5,9}\.ts")

# How long a session's state is trusted without asking Redis again: a session that must stop
# (payment required, ended) is refused within this long; the issue allows one segment (~6 s).
STATE_TTL_S = 1.0
STATE_CACHE_SIZE = 200_000
# Playlists do not change once a video is ready (a repeated transcode writes the same names).
PLAYLIST_TTL_S = 30.0
PLAYLIST_CACHE_BYTES = 32 * 1024 * 1024
PRESIGN_CACHE_SIZE = 200_000
NO_STORE = "no-store, private"

ACTIVE, PAYMENT_REQUIRED, ENDED = "active", "payment_required", "ended"


def system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PlaybackPaymentRequired(AppError):
    status, code = 402, "payment_required"
    title = "This playback session is waiting for payment; top up your wallet to continue."


class PlaybackSessionEnded(AppError):
    status, code = 410, "session_ended"
    title = "This playback session has ended; start a new one to keep watching."


class PlaybackFileNotFound(NotFound):
    code = "not_found"
    title = "This video has no such playlist or segment."


class PlaybackUnavailable(ServiceUnavailable):
    code = "playback_unavailable"
    title = "Playback cannot be authorized right now; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


@dataclass(frozen=True, slots=True)
class SessionState:
    """What delivery needs of a live session (the heartbeat code owns the hash)."""

    status: str | None  # None: no such session (any more)
    video_id: uuid.UUID | None
    expires_at_ms: int | None

    @classmethod
    def from_fields(cls, status: Any, video_id: Any, expires_at_ms: Any) -> SessionState:
        def text(value: Any) -> str | None:
            return value.decode() if isinstance(value, bytes) else value

        raw_video, raw_expiry = text(video_id), text(expires_at_ms)
        try:
            video = uuid.UUID(raw_video) if raw_video else None
            expiry = int(raw_expiry) if raw_expiry else None
        except ValueError:
            log.warning("playback_session_state_malformed")
            return cls(None, None, None)
        return cls(text(status), video, expiry)

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms


@dataclass(frozen=True, slots=True)
class Playlist:
    body: bytes
    # The URIs it names: renditions' playlists in a master, segment files in a media playlist.
    uris: frozenset[str]

    @classmethod
    def parse(cls, body: bytes) -> Playlist:
        # RFC 8216 §4.1: every line that is not blank and not a tag or comment is a URI.
        lines = (line.strip() for line in body.decode("utf-8", "replace").splitlines())
        return cls(body, frozenset(line for line in lines if line and not line.startswith("#")))


class _SegmentFile(FileResponse):
    # Starlette reads 64 KiB per worker-thread hop; a 6 s segment is ~0.5-4 MiB.
    chunk_size = 1024 * 1024


# Reads the delivery fields of many sessions in one call (each key: HMGET). Missing fields and
# missing hashes come back as nil.
READ_STATES = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 'status', 'video_id', 'expires_at_ms')
end
return out
"""


class SessionStateReader:
    """Session states from Redis for many concurrent requests in one round trip.

    A playing viewer asks for a segment every few seconds, longer apart than a state may be
    cached, so at scale nearly every segment request reads its session's state. The reads asked
    for while the event loop runs one round of ready requests leave together as one script call
    (one read per session, however many of its requests wait): one round trip and one command to
    pack instead of one of each per request (measured: ~735 -> ~510 µs of service CPU per request
    when every request reads). The script reads several keys, so with Redis Cluster the session
    hashes would need one hash tag.
    """

    def __init__(self, redis: Redis, *, on_read: Callable[[uuid.UUID, SessionState], None]) -> None:
        self._script = redis.register_script(READ_STATES)
        self._on_read = on_read
        # Every read not answered yet, queued or in flight: requests for the same session share it.
        self._reads: dict[uuid.UUID, asyncio.Future[SessionState]] = {}
        self._queued: list[uuid.UUID] = []
        self._batches: set[asyncio.Task[None]] = set()

    def read(self, sid: uuid.UUID) -> asyncio.Future[SessionState]:
        future = self._reads.get(sid)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._reads[sid] = loop.create_future()
            if not self._queued:
                loop.call_soon(self._send)
            self._queued.append(sid)
        return future

    def _send(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._run(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[uuid.UUID]) -> None:
        try:
            replies = await self._script(keys=[f"{SESSION_KEY_PREFIX}{sid}" for sid in batch])
            states = [SessionState.from_fields(*fields) for fields in replies]
            if len(states) != len(batch):
                raise RedisError(f"{len(states)} session states for {len(batch)} sessions")
        except Exception as exc:
            self._fail(batch, exc)
            return
        except asyncio.CancelledError:
            self._fail(batch, RedisError("the read was cancelled (shutting down)"))
            raise
        for sid, state in zip(batch, states, strict=True):
            self._on_read(sid, state)
            future = self._reads.pop(sid)
            if not future.done():
                future.set_result(state)

    def _fail(self, batch: list[uuid.UUID], exc: Exception) -> None:
        for sid in batch:
            future = self._reads.pop(sid)
            if not future.done():
                future.set_exception(exc)
                # Retrieved here: when every waiter has left, nobody else would.
                future.exception()


class PlaybackDelivery:
    """Authorization and file lookup for one app, with in-process caches: a segment request costs
    no round trip when its session was read within the last second (and its URL presigned within
    the last minute), and a share of one batched Redis read otherwise."""

    def __init__(
        self,
        *,
        redis: Redis,
        storage: Storage,
        secret: str,
        segment_url_ttl_s: int,
        clock_ms: Callable[[], int] = system_clock_ms,
    ) -> None:
        self.redis = redis
        self.storage = storage
        self.secret = secret
        self.segment_url_ttl_s = segment_url_ttl_s
        # The service's clock (the one expires_at_ms and credentials are written with; tests move it).
        self.clock_ms = clock_ms
        self._local = storage if isinstance(storage, LocalStorage) else None
        self._states: TTLCache[uuid.UUID, SessionState] = TTLCache(STATE_CACHE_SIZE, STATE_TTL_S)
        self._reader = SessionStateReader(redis, on_read=self._states.__setitem__)
        self._playlists: TTLCache[str, Playlist] = TTLCache(
            PLAYLIST_CACHE_BYTES, PLAYLIST_TTL_S, getsizeof=lambda playlist: len(playlist.body) + 256
        )
        # A URL handed out from here is still valid for at least half its lifetime. Each one is
        # kept for a random 75-100 % of that half, so URLs presigned together (a warm-up, a
        # premiere) are not all presigned again in the same instant (~0.6 ms of CPU each).
        reuse_s = segment_url_ttl_s / 2

        def reuse_until(_key: str, _url: str, now: float) -> float:
            return now + reuse_s * random.uniform(0.75, 1.0)  # noqa: S311 - spreading load, not secrecy

        self._urls: TLRUCache[str, str] = TLRUCache(PRESIGN_CACHE_SIZE, reuse_until)

    @classmethod
    def of(cls, request: Request) -> PlaybackDelivery:
        """The app's delivery, made on first use from what the lifespan put on ``app.state`` (its
        Redis client, its storage, and the clock of ``app.state.playback`` when there is one)."""
        state = request.app.state
        delivery: PlaybackDelivery | None = getattr(state, "playback_delivery", None)
        if delivery is None:
            settings = state.settings
            clock_ms = getattr(getattr(state, "playback", None), "clock", None) or system_clock_ms
            delivery = state.playback_delivery = cls(
                redis=state.redis,
                storage=state.storage,
                secret=settings.playback_secret,
                segment_url_ttl_s=settings.segment_url_ttl_s,
                clock_ms=clock_ms,
            )
        return delivery

    # -- authorization ---------------------------------------------------------------------------

    async def authorize(self, session_id: str, credential: str) -> uuid.UUID:
        """The video the session plays, when the credential is good and the session may play now."""
        try:
            sid = uuid.UUID(session_id)
        except ValueError:
            raise InvalidPlaybackCredential() from None
        now_ms = self.clock_ms()
        grant = verify_playback_credential(self.secret, credential, session_id=sid, now=now_ms / 1000)
        state = self._states.get(sid)
        if state is None or (state.status != ENDED and state.expired(now_ms)):
            # Not known here, or it looks expired: a heartbeat may have extended it since the
            # cached read, so only Redis may say it is over.
            state = await self._read_state(sid)
            if state.status != ENDED and state.expired(now_ms):
                # Past its deadline a session is over, whatever its hash still says until the
                # sweeper gets to it; remembered, so its next requests do not ask Redis again.
                state = self._states[sid] = replace(state, status=ENDED)
        if state.status is None or state.status == ENDED:
            raise PlaybackSessionEnded()
        if state.video_id != grant.video_id:
            raise InvalidPlaybackCredential()
        if state.status == PAYMENT_REQUIRED:
            raise PlaybackPaymentRequired()
        if state.status != ACTIVE:
            log.warning("playback_session_status_unknown", status=state.status)
            raise PlaybackSessionEnded()
        return grant.video_id

    async def _read_state(self, sid: uuid.UUID) -> SessionState:
        try:
            # Shielded: a client that goes away does not cancel the read others may share.
            return await asyncio.shield(self._reader.read(sid))
        except RedisError as exc:
            log.warning("playback_state_unavailable", error=repr(exc))
            raise PlaybackUnavailable() from exc

    # -- files -----------------------------------------------------------------------------------

    async def playlist(self, key: str) -> Playlist:
        playlist = self._playlists.get(key)
        if playlist is None:
            try:
                body = await self.storage.get(key)
            except ObjectNotFound:
                raise PlaybackFileNotFound() from None
            except StorageError as exc:
                log.warning("playback_playlist_unavailable", key=key, error=repr(exc))
                raise PlaybackUnavailable() from exc
            playlist = self._playlists[key] = Playlist.parse(body)
        return playlist

    async def media_playlist(self, video_id: uuid.UUID, rendition: str) -> Playlist:
        """The rendition's playlist, when the video's master names that rendition."""
        key = f"videos/{video_id}/{rendition}/{PLAYLIST_NAME}"
        playlist = self._playlists.get(key)
        if playlist is None:
            master = await self.playlist(f"videos/{video_id}/{MASTER_NAME}")
            if f"{rendition}/{PLAYLIST_NAME}" not in master.uris:
                raise PlaybackFileNotFound()
            playlist = await self.playlist(key)
        return playlist

    async def segment(self, video_id: uuid.UUID, rendition: str, name: str) -> Response:
        key = f"videos/{video_id}/{rendition}/{name}"
        if self._local is None:
            # Only segments a playlist named are ever presigned, so a cached URL needs no check.
            url = self._urls.get(key)
            if url is None:
                await self._check_named(video_id, rendition, name)
                presigned = await self.storage.presign_get(key, self.segment_url_ttl_s, public=True)
                if presigned is None:
                    raise RuntimeError(f"{self.storage!r} neither presigns URLs nor is a local directory")
                url = self._urls[key] = presigned
            return Response(status_code=302, headers={"location": url, "cache-control": NO_STORE})
        await self._check_named(video_id, rendition, name)
        return await self._send_file(self._local, key)

    async def _check_named(self, video_id: uuid.UUID, rendition: str, name: str) -> None:
        if name not in (await self.media_playlist(video_id, rendition)).uris:
            raise PlaybackFileNotFound()

    @staticmethod
    async def _send_file(storage: LocalStorage, key: str) -> Response:
        path = storage.local_path(key)
        try:
            info = await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            raise PlaybackFileNotFound() from None
        if not stat.S_ISREG(info.st_mode):
            raise PlaybackFileNotFound()
        return _SegmentFile(
            path, media_type=SEGMENT_TYPE, stat_result=info, headers={"cache-control": NO_STORE}
        )


def master_path(session_id: uuid.UUID, credential: str, *, prefix: str = "") -> str:
    """Where a session's master playlist is: ``master_url`` is this with the public API prefix."""
    return f"{prefix}/playback/sessions/{session_id}/{credential}/{MASTER_NAME}"


def playlist_response(playlist: Playlist) -> Response:
    return Response(playlist.body, media_type=PLAYLIST_TYPE, headers={"cache-control": NO_STORE})


async def master_playlist(request: Request) -> Response:
    """The session's HLS master playlist; its relative URIs resolve under the same session path."""
    # FastAPI names only its own routes in the scope; this lets metrics label by template without
    # matching the path a second time.
    request.scope["route"] = MASTER_ROUTE
    params = request.path_params
    delivery = PlaybackDelivery.of(request)
    video_id = await delivery.authorize(params["session_id"], params["credential"])
    return playlist_response(await delivery.playlist(f"videos/{video_id}/{MASTER_NAME}"))


async def rendition_file(request: Request) -> Response:
    """A rendition's media playlist, or one of its segments (a redirect when storage is S3)."""
    request.scope["route"] = RENDITION_FILE_ROUTE
    params = request.path_params
    rendition, file = params["rendition"], params["file"]
    is_playlist = file == PLAYLIST_NAME
    if not RENDITION.fullmatch(rendition) or not (is_playlist or SEGMENT.fullmatch(file)):
        raise PlaybackFileNotFound()
    delivery = PlaybackDelivery.of(request)
    video_id = await delivery.authorize(params["session_id"], params["credential"])
    if is_playlist:
        return playlist_response(await delivery.media_playlist(video_id, rendition))
    return await delivery.segment(video_id, rendition, file)


# Delivery runs for every segment a player fetches, so its two routes are plain Starlette routes:
# they skip FastAPI's parameter solving and validation (measured here: ~350 -> ~200 µs per segment
# request, /healthz being ~120 µs), and the names are checked strictly by hand anyway. They are not
# in the OpenAPI document; clients never build these URLs, they follow a session's master_url.
MASTER_ROUTE = Route(
    "/playback/sessions/{session_id}/{credential}/master.m3u8", master_playlist, methods=["GET"]
)
RENDITION_FILE_ROUTE = Route(
    "/playback/sessions/{session_id}/{credential}/{rendition}/{file}", rendition_file, methods=["GET"]
)
router = APIRouter()
router.routes += [MASTER_ROUTE, RENDITION_FILE_ROUTE]
