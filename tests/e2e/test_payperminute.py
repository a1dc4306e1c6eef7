"""End to end, pay-per-minute: `streamify up` as a real process tree, used through the gateway.

Short units (BILLING_UNIT_SECONDS=2, HEARTBEAT_INTERVAL_SECONDS=1). A creator uploads a paid video
(25 cents a unit: 5 to the platform, 20 to the creator); a viewer tops up 100 cents, starts a
session (unit 0 charged at once), plays it with ffmpeg as the HLS client through the session's
master URL while a heartbeat loop runs, and is charged unit after unit until the wallet is empty:
the session turns `payment_required` and its segments answer 402. A top-up lets the same session
continue. At the end the creator has earned exactly the share of every unit, the wallet history
shows each movement, and `streamify billing verify` finds the ledger consistent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_pipeline import _play, _wait_ready
from tests.e2e.test_stack import RUN, Client, Stack, _port_range, _report_ready_time, _stack_env
from tests.media import make_video

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]

PRICE = 25  # cents per unit (a top-up is at least 100 cents)
UNIT_S = 2
HEARTBEAT_S = 1
SHARE, FEE = 20, 5  # floor(25 * 20%) = 5 to the platform, the rest to the creator


def _money_call(
    client: Client, method: str, path: str, *, key: str | None = None, **kwargs: Any
) -> httpx.Response:
    assert client.token
    headers = {"Authorization": f"Bearer {client.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.http.request(method, f"/api/v1{path}", headers=headers, **kwargs)


def _sign_in(http: httpx.Client, label: str) -> Client:
    client = Client(http, f"ppm-{label}-{RUN}-{uuid.uuid4().hex[:6]}@example.com")
    client.register(label.title())
    client.login()
    return client


def _become_creator(http: httpx.Client, creator: Client) -> None:
    channel = creator.call("POST", "/users/me/channel", json={"channel_name": f"PPM {RUN}"})
    assert channel.status_code == 201, channel.text
    # The role claim changes with the next token.
    login = http.post("/api/v1/auth/login", json={"email": creator.email, "password": "plum-orbit-canyon-47"})
    assert login.status_code == 200, login.text
    creator.token = login.json()["access_token"]


def _status_within(http: httpx.Client, url: str, status: int, seconds: float) -> int:
    """The status ``url`` answers once it answers ``status``, or the last one after ``seconds``
    (streaming may serve a session's state from its one-second cache)."""
    deadline = time.monotonic() + seconds
    while (code := http.get(url).status_code) != status and time.monotonic() < deadline:
        time.sleep(0.1)
    return code


class HeartbeatLoop(threading.Thread):
    """A player's heartbeat: every interval, the position it has reached, while playing."""

    def __init__(self, viewer: Client, session_id: str) -> None:
        super().__init__(daemon=True)
        self.viewer, self.session_id = viewer, session_id
        self.started_at = time.monotonic()
        self.stop_event = threading.Event()
        self.replies: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def beat(self) -> dict[str, Any]:
        position = round(time.monotonic() - self.started_at, 3)
        response = self.viewer.call(
            "POST",
            f"/playback/sessions/{self.session_id}/heartbeat",
            json={"position_s": position, "state": "playing"},
        )
        if response.status_code != 200:
            self.errors.append(f"{response.status_code} {response.text}")
            return {}
        reply: dict[str, Any] = response.json()
        self.replies.append(reply)
        return reply

    def run(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_S):
            self.beat()

    def wait_for(self, status: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.replies and self.replies[-1].get("status") == status:
                return self.replies[-1]
            time.sleep(0.1)
        pytest.fail(f"no {status!r} heartbeat within {timeout_s} s: {self.replies[-3:]} {self.errors[-3:]}")


class TestPayPerMinute:
    def test_a_viewer_pays_unit_by_unit_runs_dry_tops_up_and_continues(
        self, tmp_path: Path, db_prefix: str, stacks: list[Stack], capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = make_video(tmp_path / "clip-360p.mp4", size="640x360", seconds=30, rate=24)
        data_dir = tmp_path / "data"
        env = {
            **_stack_env(db_prefix),
            "STREAMIFY_TRANSCODERS": "1",
            "BILLING_UNIT_SECONDS": str(UNIT_S),
            "HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_S),
        }
        stack = Stack(data_dir, _port_range(), env)
        stacks.append(stack)
        _report_ready_time(capsys, "pay-per-minute", stack.start())

        with httpx.Client(base_url=stack.url, timeout=30) as http:
            creator = _sign_in(http, "creator")
            _become_creator(http, creator)
            created = creator.call(
                "POST",
                "/videos",
                json={"title": "A paid film", "price_per_minute": PRICE, "visibility": "public"},
            )
            assert created.status_code == 201, created.text
            video_id = created.json()["id"]
            with source.open("rb") as body:
                put = creator.call(
                    "PUT", f"/videos/{video_id}/source", content=body, headers={"Content-Type": "video/mp4"}
                )
            assert put.status_code in (200, 202), put.text
            _wait_ready(creator, video_id, capsys)

            # A viewer with an empty wallet cannot start a paid session.
            broke = _sign_in(http, "broke")
            refused = broke.call("POST", "/playback/sessions", json={"video_id": video_id})
            assert refused.status_code == 402, refused.text
            assert refused.json()["code"] == "insufficient_funds"

            viewer = _sign_in(http, "viewer")
            topup_key = uuid.uuid4().hex
            topup = _money_call(
                viewer,
                "POST",
                "/wallet/topups",
                key=topup_key,
                json={"amount": 4 * PRICE, "payment_method": "test_card"},
            )
            assert topup.status_code == 201, topup.text
            # A retried top-up (same key, same body) is not a second top-up.
            again = _money_call(
                viewer,
                "POST",
                "/wallet/topups",
                key=topup_key,
                json={"amount": 4 * PRICE, "payment_method": "test_card"},
            )
            assert again.status_code == 201 and again.json() == topup.json()

            started = viewer.call("POST", "/playback/sessions", json={"video_id": video_id})
            assert started.status_code == 201, started.text
            session = started.json()
            assert session["heartbeat_interval_s"] == HEARTBEAT_S
            assert session["billed_minutes"] == 1 and session["charged_total"] == PRICE  # unit 0, prepaid
            master_url = f"{stack.url}{session['master_url']}"

            loop = HeartbeatLoop(viewer, session["session_id"])
            loop.start()
            try:
                code, decoded, stderr = _play(master_url)
                assert code == 0, stderr
                assert decoded is not None and decoded > 25, decoded

                dry = loop.wait_for("payment_required", timeout_s=30)
                assert dry["billed_minutes"] == 4
                assert dry["charged_total"] == 4 * PRICE
                assert dry["balance"] == 0

                segment = f"{master_url.rsplit('/', 1)[0]}/360p/seg_00000.ts"
                assert _status_within(http, segment, 402, seconds=2) == 402
                assert _status_within(http, master_url, 402, seconds=2) == 402

                more = _money_call(
                    viewer,
                    "POST",
                    "/wallet/topups",
                    key=uuid.uuid4().hex,
                    json={"amount": 4 * PRICE, "payment_method": "test_card"},
                )
                assert more.status_code == 201, more.text
                resumed = loop.wait_for("active", timeout_s=10)
                assert resumed["billed_minutes"] >= 5
                # Within one segment duration the segments play again.
                assert _status_within(http, segment, 200, seconds=6) == 200
            finally:
                loop.stop_event.set()
                loop.join(timeout=10)
            assert not [e for e in loop.errors if not e.startswith("5")], loop.errors

            ended = viewer.call("POST", f"/playback/sessions/{session['session_id']}/end")
            assert ended.status_code == 200, ended.text
            assert _status_within(http, segment, 410, seconds=2) == 410
            billed = ended.json()["billed_minutes"]
            assert 5 <= billed <= 8, billed

            wallet = viewer.call("GET", "/wallet").json()
            assert wallet["balance"] == 8 * PRICE - billed * PRICE
            earnings = creator.call("GET", "/creator/earnings")
            assert earnings.status_code == 200, earnings.text
            assert earnings.json()["total"] == billed * SHARE
            assert FEE + SHARE == PRICE
            history = viewer.call("GET", "/users/me/history").json()
            assert [item["video_id"] for item in history["items"]] == [video_id]

            # Moments later analytics shows the creator the view, the revenue and the retention,
            # and the viewer what they spent: every event went producer → outbox → bus → rollups.
            deadline = time.monotonic() + 15
            while True:
                stats = creator.call("GET", f"/analytics/videos/{video_id}")
                assert stats.status_code == 200 or stats.status_code == 404, stats.text
                if stats.status_code == 200 and stats.json()["totals"]["revenue"] == billed * SHARE:
                    break
                assert time.monotonic() < deadline, stats.text
                time.sleep(0.3)
            totals = stats.json()["totals"]
            assert (totals["sessions"], totals["views"], totals["unique_viewers"]) == (1, 1, 1)
            assert totals["watch_minutes"] > 0
            assert stats.json()["retention"][0]["share"] == 1.0
            overview = creator.call("GET", "/analytics/creator/overview").json()
            assert overview["totals"]["revenue"] == billed * SHARE
            assert [v["video_id"] for v in overview["videos"]] == [video_id]
            mine = viewer.call("GET", "/analytics/me").json()
            assert (mine["sessions"], mine["spent"]) == (1, billed * PRICE)

        verify = subprocess.run(
            [sys.executable, "-m", "streamify", "billing", "verify", "--data-dir", str(data_dir)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
