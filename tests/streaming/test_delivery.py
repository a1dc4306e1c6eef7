"""HLS delivery per playback session, against real Redis, real storage (a local directory and an
S3 server) and a real HLS set made by the transcoder's own ladder code with ffmpeg.

The service (``services.streaming.app.create_app``) is served by uvicorn on a free port, so every
request is real HTTP (and ffmpeg can play through it). Session state is written to Redis the way
the heartbeat code keeps it (hash ``streaming:session:{id}``); credentials are minted with the
service's own function, on the service's clock (which tests move).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import m3u8
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from common.media import probe
from common.storage import Storage, StorageSettings
from services.streaming import delivery
from services.streaming.app import create_app
from services.streaming.credentials import (
    InvalidPlaybackCredential,
    mint_playback_credential,
    verify_playback_credential,
)
from services.streaming.settings import StreamingSettings
from streamify.embedded import free_port
from tests.conftest import migrated_database
from tests.fixtures_s3 import S3Server
from tests.identities import TokenMinter
from tests.media import make_video
from transcoder.ffmpeg import MASTER_NAME, PLAYLIST_NAME, ffmpeg_executable, ladder_command, run_ffmpeg
from transcoder.hls import content_type, master_playlist, measure_variant
from transcoder.ladder import choose_ladder

FFMPEG = ffmpeg_executable()
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")

SECRET = f"test-playback-secret-{uuid.uuid4().hex}"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CLIP_SECONDS = 4
CLIP_FPS = 25


# --- the HLS set: the transcoder's ladder code on a tiny clip -------------------------------------


@pytest.fixture(scope="session")
async def hls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``master.m3u8`` and ``360p/``, ``480p/`` (index.m3u8 + 1 s segments), as the transcoder
    writes them under ``videos/{id}/``."""
    assert FFMPEG is not None
    work = tmp_path_factory.mktemp("hls")
    source = await asyncio.to_thread(
        make_video, work / "source.mp4", size="854x480", seconds=CLIP_SECONDS, rate=CLIP_FPS
    )
    ladder = choose_ladder(await probe(source))
    assert [r.name for r in ladder] == ["360p", "480p"]
    out = work / "out"
    for rendition in ladder:
        (out / rendition.name).mkdir(parents=True)
    args = ladder_command(
        FFMPEG,
        source,
        ladder,
        out,
        preset="ultrafast",
        segment_seconds=1,
        keyframe_seconds=1,
        force_fps=False,
    )
    result = await run_ffmpeg(args, timeout_s=120)
    assert result.ok, result.stderr_tail
    variants = [(r, measure_variant(out / r.name / PLAYLIST_NAME)) for r in ladder]
    (out / MASTER_NAME).write_text(master_playlist(variants, playlist_name=PLAYLIST_NAME))
    return out


def hls_files(root: Path) -> dict[str, Path]:
    """Relative name (``480p/seg_00001.ts``) -> file."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


# --- the app, served for real --------------------------------------------------------------------


@dataclass
class Session:
    id: uuid.UUID
    video_id: uuid.UUID
    credential: str
    redis: Redis

    @property
    def path(self) -> str:
        """The folder the master playlist is in (what relative URIs resolve against)."""
        return delivery.master_path(self.id, self.credential).removesuffix("/master.m3u8")

    @property
    def key(self) -> str:
        return f"streaming:session:{self.id}"

    async def set(self, **fields: Any) -> None:
        written = self.redis.hset(self.key, mapping={k: str(v) for k, v in fields.items()})
        await cast(Awaitable[int], written)  # (redis-py types sync and async replies as one)


class ServiceClock:
    """The streaming service's clock (ms): the real time when the app starts, moved by tests."""

    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)


@dataclass
class Stack:
    """The streaming service over one store, with the HLS set stored for ``video_id``."""

    backend: str
    url: str
    client: httpx.AsyncClient
    storage: Storage
    redis: Redis
    clock: ServiceClock
    video_id: uuid.UUID
    files: dict[str, Path]

    async def session(
        self,
        *,
        status: str = "active",
        expires_in_s: float = 60,
        video_id: uuid.UUID | None = None,
        credential_video_id: uuid.UUID | None = None,
        credential_expires_in_s: int = 600,
    ) -> Session:
        sid = uuid.uuid4()
        video = video_id or self.video_id
        credential = mint_playback_credential(
            SECRET,
            session_id=sid,
            video_id=credential_video_id or video,
            expires_at=self.clock() // 1000 + credential_expires_in_s,
        )
        session = Session(sid, video, credential, self.redis)
        await session.set(
            status=status,
            video_id=video,
            viewer_id=uuid.uuid4(),
            expires_at_ms=self.clock() + round(expires_in_s * 1000),
        )
        await self.redis.expire(session.key, 300)
        return session

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)


async def serve(app: FastAPI) -> tuple[str, Callable[[], Awaitable[None]]]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    else:
        raise RuntimeError("the streaming app did not start within 10 s")

    async def stop() -> None:
        server.should_exit = True
        await task

    return f"http://127.0.0.1:{port}", stop


@asynccontextmanager
async def running_stack(
    backend: str, storage_settings: StorageSettings, redis_url: str, redis: Redis, hls: Path
) -> AsyncIterator[Stack]:
    settings = StreamingSettings(
        database_url=await migrated_database("streaming"),
        redis_url=redis_url,
        storage=storage_settings,
        playback_secret=SECRET,
        # Sessions here are written straight to Redis; nothing for the expiry sweeper to do.
        sweep_interval_s=0,
    )
    clock = ServiceClock()
    app = create_app(settings, jwks_loader=TokenMinter().loader, clock=clock)
    url, stop = await serve(app)
    try:
        storage: Storage = app.state.storage
        await storage.ensure_bucket()
        video_id = uuid.uuid4()
        files = hls_files(hls)
        for name, path in files.items():
            await storage.put(f"videos/{video_id}/{name}", path.read_bytes(), content_type=content_type(name))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Stack(backend, url, client, storage, redis, clock, video_id, files)
    finally:
        await stop()


@pytest.fixture(scope="module")
async def local_stack(
    service_env: dict[str, str],
    redis_url: str,
    redis: Redis,
    hls_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("delivery-storage")
    # Something a traversal would love to read: next to the store, and inside it outside videos/.
    (root / "secret.txt").write_text("top secret")
    storage = StorageSettings(storage_backend="local", storage_local_dir=root / "objects")
    async with running_stack("local", storage, redis_url, redis, hls_dir) as stack:
        await stack.storage.put("private/secret.txt", b"top secret")
        yield stack


@pytest.fixture(scope="module")
async def s3_stack(
    service_env: dict[str, str], redis_url: str, redis: Redis, hls_dir: Path, s3_server: S3Server
) -> AsyncIterator[Stack]:
    async with running_stack("s3", s3_server.settings(), redis_url, redis, hls_dir) as stack:
        yield stack


@pytest.fixture(params=["local", "s3"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each test that takes ``stack`` runs once per storage backend."""
    found: Stack = request.getfixturevalue(f"{request.param}_stack")
    return found


async def fetch_segment(stack: Stack, response: httpx.Response) -> bytes:
    """The bytes a player ends up with: the response itself, or where its redirect points."""
    if stack.backend == "s3":
        assert response.status_code == 302, response.text
        async with httpx.AsyncClient(timeout=10) as outside:
            redirected = await outside.get(response.headers["location"])
        assert redirected.status_code == 200
        return redirected.content
    assert response.status_code == 200, response.text
    return response.content


async def first_status_change(
    stack: Stack, path: str, *, expected: int, within_s: float
) -> tuple[httpx.Response, float]:
    """Poll ``path`` until it answers ``expected``; the answer and how long it took."""
    started = time.monotonic()
    while True:
        response = await stack.get(path)
        elapsed = time.monotonic() - started
        if response.status_code == expected or elapsed > within_s:
            return response, elapsed
        await asyncio.sleep(0.02)


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    code: str = response.json()["code"]
    return code


# --- behaviours ----------------------------------------------------------------------------------


class TestAnActiveSessionPlaysTheVideo:
    async def test_the_master_playlist_is_served_as_stored_and_never_cached(self, stack: Stack) -> None:
        session = await stack.session()
        response = await stack.get(f"{session.path}/master.m3u8")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == PLAYLIST_TYPE
        assert "no-store" in response.headers["cache-control"]
        assert response.content == stack.files[MASTER_NAME].read_bytes()

    async def test_media_playlists_are_served_under_the_session_path(self, stack: Stack) -> None:
        session = await stack.session()
        response = await stack.get(f"{session.path}/480p/index.m3u8")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == PLAYLIST_TYPE
        assert "no-store" in response.headers["cache-control"]
        assert response.content == stack.files["480p/index.m3u8"].read_bytes()

    async def test_every_uri_in_the_playlists_resolves_under_the_session_path_to_the_stored_bytes(
        self, stack: Stack
    ) -> None:
        session = await stack.session()
        master_url = f"{stack.url}{session.path}/master.m3u8"
        master = m3u8.loads((await stack.get(master_url)).text, uri=master_url)
        assert len(master.playlists) == 2
        segments = 0
        for variant in master.playlists:
            assert variant.absolute_uri.startswith(f"{stack.url}{session.path}/")
            media = m3u8.loads((await stack.get(variant.absolute_uri)).text, uri=variant.absolute_uri)
            for segment in media.segments:
                assert segment.absolute_uri.startswith(f"{stack.url}{session.path}/")
                name = segment.absolute_uri.removeprefix(f"{stack.url}{session.path}/")
                body = await fetch_segment(stack, await stack.get(segment.absolute_uri))
                assert body == stack.files[name].read_bytes()
                segments += 1
        assert segments >= 2 * CLIP_SECONDS

    async def test_a_segment_is_mpeg_ts_and_never_cached(self, stack: Stack) -> None:
        session = await stack.session()
        response = await stack.get(f"{session.path}/360p/seg_00001.ts")
        assert "no-store" in response.headers["cache-control"]
        if stack.backend == "s3":
            assert response.status_code == 302
            async with httpx.AsyncClient(timeout=10) as outside:
                redirected = await outside.get(response.headers["location"])
            assert redirected.headers["content-type"] == "video/mp2t"
        else:
            assert response.status_code == 200
            assert response.headers["content-type"] == "video/mp2t"
            assert int(response.headers["content-length"]) == stack.files["360p/seg_00001.ts"].stat().st_size


class TestS3SegmentsAreRedirectsToShortLivedUrls:
    async def test_the_redirect_points_at_the_store_not_at_the_service(self, s3_stack: Stack) -> None:
        session = await s3_stack.session()
        response = await s3_stack.get(f"{session.path}/480p/seg_00002.ts")
        assert response.status_code == 302
        location = httpx.URL(response.headers["location"])
        assert not str(location).startswith(s3_stack.url)
        assert location.params["X-Amz-Expires"] == str(StreamingSettings().segment_url_ttl_s)
        assert f"videos/{s3_stack.video_id}/480p/seg_00002.ts" in location.path
        assert response.content == b""

    async def test_viewers_of_the_same_segment_get_a_url_that_works_for_each(self, s3_stack: Stack) -> None:
        first, second = await s3_stack.session(), await s3_stack.session()
        for session in (first, second):
            body = await fetch_segment(s3_stack, await s3_stack.get(f"{session.path}/360p/seg_00000.ts"))
            assert body == s3_stack.files["360p/seg_00000.ts"].read_bytes()


class TestLocalSegmentsAreSentAsFiles:
    async def test_a_byte_range_of_a_segment_is_served(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        response = await local_stack.get(
            f"{session.path}/360p/seg_00000.ts", headers={"Range": "bytes=188-375"}
        )
        assert response.status_code == 206
        assert response.content == local_stack.files["360p/seg_00000.ts"].read_bytes()[188:376]


class TestPlaybackCredentials:
    def test_a_credential_is_short_url_safe_and_names_its_video(self) -> None:
        session_id, video_id = uuid.uuid4(), uuid.uuid4()
        credential = mint_playback_credential(
            SECRET, session_id=session_id, video_id=video_id, expires_at=2**40
        )
        assert re.fullmatch(r"[A-Za-z0-9_-]{60}", credential)
        grant = verify_playback_credential(SECRET, credential, session_id=session_id, now=2**40 - 1)
        assert (grant.session_id, grant.video_id, grant.expires_at) == (session_id, video_id, 2**40)

    def test_every_single_character_change_is_refused(self) -> None:
        session_id = uuid.uuid4()
        credential = mint_playback_credential(
            SECRET, session_id=session_id, video_id=uuid.uuid4(), expires_at=2**40
        )
        for i, char in enumerate(credential):
            other = "A" if char != "A" else "B"
            with pytest.raises(InvalidPlaybackCredential):
                verify_playback_credential(
                    SECRET, credential[:i] + other + credential[i + 1 :], session_id=session_id
                )


# Authorization comes before storage: these behaviours are the same on either backend.


class TestTheCredentialIsChecked:
    async def test_a_tampered_credential_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        flipped = session.credential[:30] + ("A" if session.credential[30] != "A" else "B")
        tampered = flipped + session.credential[31:]
        response = await local_stack.get(f"/playback/sessions/{session.id}/{tampered}/master.m3u8")
        assert response.status_code == 403
        assert problem_code(response) == "invalid_playback_credential"

    async def test_a_malformed_credential_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        for credential in ("x", session.credential + "A", session.credential[:-1] + "=", "%20" * 60):
            response = await local_stack.get(
                f"/playback/sessions/{session.id}/{credential}/360p/seg_00000.ts"
            )
            assert response.status_code == 403, credential
            assert problem_code(response) == "invalid_playback_credential"

    async def test_an_expired_credential_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session(credential_expires_in_s=-1)
        response = await local_stack.get(f"{session.path}/360p/seg_00000.ts")
        assert response.status_code == 403
        assert problem_code(response) == "invalid_playback_credential"
        assert "expired" in response.json()["detail"]

    async def test_a_credential_expires_on_the_services_clock(self, local_stack: Stack) -> None:
        session = await local_stack.session(credential_expires_in_s=60, expires_in_s=600)
        assert (await local_stack.get(f"{session.path}/master.m3u8")).status_code == 200
        local_stack.clock.advance(60)
        response = await local_stack.get(f"{session.path}/master.m3u8")
        assert response.status_code == 403
        assert problem_code(response) == "invalid_playback_credential"

    async def test_another_sessions_credential_is_refused(self, local_stack: Stack) -> None:
        mine, theirs = await local_stack.session(), await local_stack.session()
        response = await local_stack.get(f"/playback/sessions/{mine.id}/{theirs.credential}/480p/index.m3u8")
        assert response.status_code == 403
        assert problem_code(response) == "invalid_playback_credential"

    async def test_a_credential_for_another_video_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session(credential_video_id=uuid.uuid4())
        response = await local_stack.get(f"{session.path}/master.m3u8")
        assert response.status_code == 403
        assert problem_code(response) == "invalid_playback_credential"

    async def test_a_credential_signed_with_another_secret_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        forged = mint_playback_credential(
            "another-secret-" + "x" * 32,
            session_id=session.id,
            video_id=session.video_id,
            expires_at=local_stack.clock() // 1000 + 600,
        )
        response = await local_stack.get(f"/playback/sessions/{session.id}/{forged}/master.m3u8")
        assert response.status_code == 403


class TestASessionWaitingForPaymentGets402:
    async def test_segments_answer_402_within_a_second_of_the_state_change_and_resume_after(
        self, local_stack: Stack
    ) -> None:
        session = await local_stack.session()
        segment = f"{session.path}/360p/seg_00002.ts"
        assert (await local_stack.get(segment)).status_code == 200  # the state is now cached here

        await session.set(status="payment_required")
        refused, elapsed = await first_status_change(local_stack, segment, expected=402, within_s=3)
        assert refused.status_code == 402
        assert problem_code(refused) == "payment_required"
        assert elapsed <= delivery.STATE_TTL_S + 0.5
        playlist = await local_stack.get(f"{session.path}/master.m3u8")
        assert playlist.status_code == 402

        # A top-up lets the heartbeat code put the same session back to active.
        await session.set(status="active")
        resumed, elapsed = await first_status_change(local_stack, segment, expected=200, within_s=3)
        assert resumed.status_code == 200
        assert elapsed <= delivery.STATE_TTL_S + 0.5


class TestAnEndedSessionGets410:
    async def test_an_ended_session_is_refused_within_a_second(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        segment = f"{session.path}/480p/seg_00000.ts"
        assert (await local_stack.get(segment)).status_code == 200
        await session.set(status="ended")
        refused, elapsed = await first_status_change(local_stack, segment, expected=410, within_s=3)
        assert refused.status_code == 410
        assert problem_code(refused) == "session_ended"
        assert elapsed <= delivery.STATE_TTL_S + 0.5

    async def test_a_session_past_its_heartbeat_deadline_is_refused_even_while_still_marked_active(
        self, local_stack: Stack
    ) -> None:
        session = await local_stack.session(expires_in_s=-0.5)
        response = await local_stack.get(f"{session.path}/480p/seg_00000.ts")
        assert response.status_code == 410
        assert problem_code(response) == "session_ended"

    async def test_a_session_whose_deadline_passes_while_cached_is_refused_at_once(
        self, local_stack: Stack
    ) -> None:
        session = await local_stack.session(expires_in_s=10)
        segment = f"{session.path}/480p/seg_00000.ts"
        assert (await local_stack.get(segment)).status_code == 200
        local_stack.clock.advance(10)
        assert (await local_stack.get(segment)).status_code == 410

    async def test_a_heartbeat_that_extends_the_deadline_keeps_the_session_playing(
        self, local_stack: Stack
    ) -> None:
        session = await local_stack.session(expires_in_s=10)
        segment = f"{session.path}/480p/seg_00000.ts"
        assert (await local_stack.get(segment)).status_code == 200
        await session.set(expires_at_ms=local_stack.clock() + 30_000)
        local_stack.clock.advance(10)
        assert (await local_stack.get(segment)).status_code == 200

    async def test_a_session_unknown_to_redis_is_refused(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        await local_stack.redis.delete(session.key)
        response = await local_stack.get(f"{session.path}/master.m3u8")
        assert response.status_code == 410
        assert problem_code(response) == "session_ended"


class TestManySessionsAtOnce:
    async def test_concurrent_requests_of_many_sessions_each_get_their_own_sessions_answer(
        self, local_stack: Stack
    ) -> None:
        expected = {"active": 200, "payment_required": 402, "ended": 410}
        sessions = [
            (await local_stack.session(status=status), code)
            for _ in range(20)
            for status, code in expected.items()
        ]
        # Several requests per session, all in flight together: their state reads share round trips.
        requests = [(session, code) for session, code in sessions for _ in range(3)]
        responses = await asyncio.gather(
            *(local_stack.get(f"{session.path}/360p/seg_00001.ts") for session, _ in requests)
        )
        assert [r.status_code for r in responses] == [code for _, code in requests]


class TestWithoutRedis:
    async def test_segments_answer_503_with_retry_after_when_the_session_state_cannot_be_read(
        self, asgi_client: Callable[..., Any], tmp_path: Path
    ) -> None:
        settings = StreamingSettings(
            database_url=await migrated_database("streaming"),
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            storage=StorageSettings(storage_backend="local", storage_local_dir=tmp_path),
            playback_secret=SECRET,
            sweep_interval_s=0,
        )
        app = create_app(settings, jwks_loader=TokenMinter().loader)
        sid = uuid.uuid4()
        credential = mint_playback_credential(
            SECRET, session_id=sid, video_id=uuid.uuid4(), expires_at=int(time.time()) + 600
        )
        async with asgi_client(app) as client:
            response = await client.get(f"{delivery.master_path(sid, credential)}")
        assert response.status_code == 503
        assert problem_code(response) == "playback_unavailable"
        assert response.headers["retry-after"] == "1"


class TestOnlyTheVideosOwnFilesAreServed:
    async def test_a_segment_the_playlist_does_not_name_is_404(self, stack: Stack) -> None:
        session = await stack.session()
        for path in ("360p/seg_00099.ts", "1080p/index.m3u8", "1080p/seg_00000.ts"):
            response = await stack.get(f"{session.path}/{path}")
            assert response.status_code == 404, path
            assert problem_code(response) == "not_found"

    @pytest.mark.parametrize(
        "tail",
        [
            "%2E%2E/master.m3u8",
            "360p/%2E%2E%2F%2E%2E%2Fmaster.m3u8",
            "360p/..%2F..%2F..%2F..%2Fsecret.txt",
            "360p/..%5C..%5Csecret.txt",
            "..%2F..%2Fprivate/secret.txt",
            "360p/seg_00000.ts%00",
            "360p/seg_00000.ts%2F..%2Findex.m3u8",
            "360p/source.mp4",
            "360p/index.m3u8.bak",
            "360P/index.m3u8",
            "360p/seg_1.ts",
            "private/secret.txt",
        ],
    )
    async def test_path_tricks_are_refused(self, local_stack: Stack, tail: str) -> None:
        session = await local_stack.session()
        response = await local_stack.get(f"{session.path}/{tail}")
        assert response.status_code == 404, response.text
        assert b"top secret" not in response.content

    async def test_raw_dot_segments_are_refused(self, local_stack: Stack) -> None:
        """Sent on a raw socket: HTTP clients remove ``..`` before sending, attackers do not."""
        session = await local_stack.session()
        host, port = local_stack.url.removeprefix("http://").split(":")
        for tail in ("../index.m3u8", "360p/../../../../secret.txt", "../../private/secret.txt"):
            reader, writer = await asyncio.open_connection(host, int(port))
            request = f"GET {session.path}/{tail} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            answer = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert re.match(rb"HTTP/1\.1 404 ", answer), answer[:200]
            assert b"top secret" not in answer


class TestMetricsNameTheRouteNotThePath:
    async def test_segment_requests_are_counted_under_the_route_template(self, local_stack: Stack) -> None:
        session = await local_stack.session()
        assert (await local_stack.get(f"{session.path}/360p/seg_00000.ts")).status_code == 200
        metrics = (await local_stack.get("/metrics")).text
        template = "/playback/sessions/{session_id}/{credential}/{rendition}/{file}"
        assert re.search(
            rf'http_requests_total{{[^}}]*route="{re.escape(template)}"[^}}]*status="200"', metrics
        )
        assert str(session.id) not in metrics
        assert session.credential not in metrics


class TestFfmpegPlaysThroughTheSessionPath:
    async def test_ffmpeg_reads_every_frame_of_every_rendition(self, stack: Stack) -> None:
        assert FFMPEG is not None
        session = await stack.session()
        process = await asyncio.create_subprocess_exec(
            FFMPEG,
            "-v",
            "error",
            "-nostdin",
            "-i",
            f"{stack.url}{session.path}/master.m3u8",
            "-map",
            "0:v",
            "-c",
            "copy",
            "-f",
            "framecrc",
            "-",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        # ffmpeg notes (at error level) each time a redirect to the store keeps it from reusing
        # its keep-alive connection to the service; it opens another one. Nothing else may fail.
        problems = [
            line for line in stderr.decode().splitlines() if "Cannot reuse HTTP connection" not in line
        ]
        assert problems == []
        frames: dict[str, int] = {}
        for line in stdout.decode().splitlines():
            if line and not line.startswith("#"):
                stream = line.split(",", 1)[0].strip()
                frames[stream] = frames.get(stream, 0) + 1
        # Both renditions, every frame of the clip.
        assert sorted(frames.values()) == [CLIP_SECONDS * CLIP_FPS] * 2, frames
