"""End to end, the video pipeline: `streamify up` as a real process tree, used through the gateway.

A creator registers, opens a channel (refreshing the token makes them a creator), creates a
video and uploads a generated 720p clip with audio with the standard tus client (tuspy) to
/api/v1/uploads; the stack's transcoder workers turn it into the HLS ladder, progress shows in
GET /api/v1/videos/{id}, and the master playlist then plays with ffmpeg as an HLS client: every
rendition decodes and lasts as long as the source. Storage is the local backend under the stack's
data directory (serving HLS to viewers per session is the streaming service's job, not this one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tusclient import client as tus

from tests.e2e.test_stack import RUN, Client, Stack, _port_range, _report_ready_time, _stack_env
from tests.media import make_video

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]

READY_TIMEOUT_S = 120.0
CLIP_SECONDS = 6
TUS_CHUNK = 1024 * 1024


def _probe_duration(path: Path) -> float:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe is not None
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


def _play(master: Path | str) -> tuple[int, float | None, str]:
    """Decode every stream of every rendition of ``master`` (ffmpeg as an HLS client): exit code,
    the media seconds decoded (from ``-progress``) and stderr."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    args = [ffmpeg, "-v", "error", "-nostdin", "-i", str(master), "-map", "0"]
    args += ["-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    decoded = None
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "out_time_us" and value.lstrip("-").isdigit():
            decoded = int(value) / 1_000_000
    return done.returncode, decoded, done.stderr


def _wait_ready(creator: Client, video_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: list[tuple[str, int | None]] = []
    video: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = creator.call("GET", f"/videos/{video_id}")
        assert response.status_code == 200, response.text
        video = response.json()
        state = (video["status"], video["progress"])
        if not seen or seen[-1] != state:
            seen.append(state)
        if video["status"] == "failed":
            pytest.fail(f"transcoding failed: {video['failure_reason']} (seen {seen})")
        if video["status"] == "ready":
            break
        time.sleep(0.25)
    with capsys.disabled():
        print(f"\n[e2e] video states seen (status, progress): {seen}")
    assert video.get("status") == "ready", f"not ready after {READY_TIMEOUT_S:.0f} s: {seen}"
    progress = [p for status, p in seen if status == "processing" and p is not None]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    return video


class TestPipeline:
    def test_a_tus_upload_through_the_gateway_becomes_a_playable_ladder(
        self, tmp_path: Path, db_prefix: str, stacks: list[Stack], capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = make_video(tmp_path / "clip-720p.mp4", size="1280x720", seconds=CLIP_SECONDS, rate=30)
        source_duration = _probe_duration(source)
        data_dir = tmp_path / "data"
        # Two workers are plenty (and keep the shared machine usable); the default is one per core.
        env = {**_stack_env(db_prefix), "STREAMIFY_TRANSCODERS": "2"}
        stack = Stack(data_dir, _port_range(), env)
        stacks.append(stack)
        _report_ready_time(capsys, "pipeline", stack.start())

        with httpx.Client(base_url=stack.url, timeout=30) as http:
            creator = Client(http, f"pipeline-{RUN}-{uuid.uuid4().hex[:6]}@example.com")
            creator.register("Pipeline Creator")
            login = http.post(
                "/api/v1/auth/login", json={"email": creator.email, "password": "plum-orbit-canyon-47"}
            )
            assert login.status_code == 200, login.text
            creator.token = login.json()["access_token"]
            refresh_token = login.json()["refresh_token"]

            channel = creator.call("POST", "/users/me/channel", json={"channel_name": f"Pipeline {RUN}"})
            assert channel.status_code == 201, channel.text
            refreshed = http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
            assert refreshed.status_code == 200, refreshed.text
            creator.token = refreshed.json()["access_token"]
            claims = jwt.decode(creator.token, options={"verify_signature": False})
            assert claims["role"] == "creator", claims

            created = creator.call("POST", "/videos", json={"title": "Test pattern, 720p", "tags": ["e2e"]})
            assert created.status_code == 201, created.text
            video_id = created.json()["id"]
            assert created.json()["status"] == "awaiting_upload"

            # The standard tus client, as any third-party uploader would use it.
            uploads = tus.TusClient(f"{stack.url}/api/v1/uploads")
            uploads.set_headers({"Authorization": f"Bearer {creator.token}"})
            uploader = uploads.uploader(
                file_path=str(source), chunk_size=TUS_CHUNK, metadata={"video_id": video_id}
            )
            uploader.upload()
            assert uploader.offset == source.stat().st_size

            video = _wait_ready(creator, video_id, capsys)
            names = [(r["name"], r["width"], r["height"]) for r in video["renditions"]]
            assert names == [("360p", 640, 360), ("480p", 854, 480), ("720p", 1280, 720)]
            assert all(r["bandwidth"] > 0 for r in video["renditions"])
            assert video["duration_s"] == pytest.approx(source_duration, abs=1.0)
            assert video["progress"] is None and video["failure_reason"] is None

            thumbnail = creator.call("GET", f"/videos/{video_id}/thumbnail", follow_redirects=True)
            assert thumbnail.status_code == 200, thumbnail.text
            assert thumbnail.headers["content-type"].startswith("image/jpeg")
            assert thumbnail.content[:3] == b"\xff\xd8\xff"

        # ffmpeg as an HLS client: the master, every rendition, video and audio, decodes cleanly.
        master = data_dir / "storage" / "videos" / video_id / "master.m3u8"
        assert master.is_file(), sorted(p.name for p in master.parent.glob("*"))
        text = master.read_text()
        assert text.count("#EXT-X-STREAM-INF") == 3 and "CODECS=" in text and "FRAME-RATE=" in text
        code, decoded, errors = _play(master)
        assert code == 0, errors
        assert decoded is not None
        with capsys.disabled():
            print(f"[e2e] master playlist decoded: {decoded:.2f} s (source {source_duration:.2f} s)")
        assert abs(decoded - source_duration) <= 1.0
        assert stack.process is not None and stack.process.poll() is None, stack.output()
