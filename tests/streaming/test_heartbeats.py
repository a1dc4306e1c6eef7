"""Heartbeats drive billing exactly as SPEC §4 says: watch time accrues only while playing and never
faster than the wall clock, each unit is charged once when watch time enters it, and what billing's
ledger holds afterwards is what a small reference model of the rules computes."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.streaming.conftest import HEARTBEAT_S, MISSED, PRICE, UNIT_S, Player

UNIT_MS = round(UNIT_S * 1000)
TTL_MS = round(HEARTBEAT_S * 1000) * MISSED


class TestWatchTime:
    async def test_playing_accrues_the_time_played(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]

        reply = await player.play(viewer, sid, seconds=5.5)

        assert reply["watched_s"] == 5.5
        assert reply["next_heartbeat_s"] == HEARTBEAT_S

    async def test_paused_and_buffering_time_is_not_watched(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 2, "paused")
        player.clock.advance(2)
        # Even a position that moved while "paused" or "buffering" is not watched time.
        await player.beat_ok(viewer, sid, 4, "buffering")
        player.clock.advance(2)

        reply = await player.beat_ok(viewer, sid, 5, "paused")

        assert reply["watched_s"] == 0

    async def test_a_forward_seek_counts_only_the_wall_clock_time_that_passed(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        player.clock.advance(2)

        reply = await player.beat_ok(viewer, sid, 45)

        assert reply["watched_s"] == 2

    async def test_a_backward_seek_accrues_nothing_for_that_interval(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        await player.play(viewer, sid, seconds=4)
        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 1)  # seeked back from 4 s to ~0 s, played 1 s
        player.clock.advance(2)

        reply = await player.beat_ok(viewer, sid, 3)

        assert reply["watched_s"] == 4 + 0 + 2

    async def test_duplicates_and_late_arrivals_add_nothing(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 2)
        for _ in range(3):
            await player.beat_ok(viewer, sid, 2)  # a retried request
        player.clock.advance(2)
        await player.beat_ok(viewer, sid, 4)

        reply = await player.beat_ok(viewer, sid, 3)  # sent before the previous one, arrived after

        assert reply["watched_s"] == 4


class TestUnits:
    async def test_a_unit_is_charged_when_watch_time_enters_it(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        player.clock.advance(0.999)
        just_before = await player.beat_ok(viewer, sid, 0.999)
        player.clock.advance(0.001)

        entered = await player.beat_ok(viewer, sid, 1.0)

        assert just_before["billed_minutes"] == 1
        assert entered["billed_minutes"] == 2
        assert entered["charged_total"] == 2 * PRICE
        assert entered["balance"] == 8 * PRICE
        assert await player.charged_units(viewer, sid) == [0, 1]

    async def test_several_due_units_are_charged_in_order_by_one_heartbeat(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video()))["session_id"]
        player.clock.advance(HEARTBEAT_S * 2)  # a late heartbeat, still within the session's life

        reply = await player.beat_ok(viewer, sid, HEARTBEAT_S * 2)

        assert reply["billed_minutes"] == 5
        assert await player.charged_units(viewer, sid) == [0, 1, 2, 3, 4]
        assert await player.balance(viewer) == 5 * PRICE

    async def test_a_creators_earnings_are_the_share_of_every_unit(self, player: Player):
        creator, viewer = player.user("creator"), player.user()
        await player.top_up(viewer, 10 * PRICE)
        sid = (await player.started(viewer, await player.video(owner=creator)))["session_id"]
        await player.play(viewer, sid, seconds=2.5, step_s=0.5)

        earnings = await player.billing.get("/creator/earnings", headers=creator.headers)

        assert earnings.status_code == 200, earnings.text
        fee = PRICE * 2000 // 10000
        assert earnings.json()["total"] == 3 * (PRICE - fee)


# --- the reference model ------------------------------------------------------------------------


@dataclass
class ReferenceSession:
    """SPEC §4, written from the spec for this test and nothing else: what one session's heartbeats
    must be charged, given a wallet that holds ``funds`` cents when the session starts."""

    funds: int
    last_heartbeat: int
    watched: int = 0
    billed: int = 0
    position: int = 0
    status: str = "active"
    charges: list[int] = field(default_factory=list)

    def pay_due_units(self) -> None:
        due = self.watched // UNIT_MS + 1  # unit n is due once watch time enters it
        while self.billed < due:
            if self.funds < PRICE:
                self.status = "payment_required"
                # You cannot watch what you have not paid for.
                self.watched = min(self.watched, self.billed * UNIT_MS)
                return
            self.funds -= PRICE
            self.charges.append(self.billed)
            self.billed += 1
            self.status = "active"

    def heartbeat(self, now: int, position: int, playing: bool) -> None:
        elapsed = max(0, now - self.last_heartbeat)
        moved = position - self.position
        if playing and moved > 0:
            self.watched += min(elapsed, moved)
        self.last_heartbeat, self.position = now, position
        if self.status == "payment_required":
            self.watched = min(self.watched, self.billed * UNIT_MS)
        self.pay_due_units()


# (wait ms, what the player does, a distance in ms)
Step = tuple[int, str, int]
KINDS = ["play", "play", "play", "pause", "buffer", "seek_forward", "seek_back", "duplicate", "stale"]
HEARTBEAT_MS = round(HEARTBEAT_S * 1000)
# Mostly about one heartbeat interval apart (as players send them), sometimes anything up to the
# session's expiry, sometimes at once (retries, concurrent tabs).
waits = st.one_of(st.integers(HEARTBEAT_MS - 300, HEARTBEAT_MS + 300), st.integers(0, TTL_MS - 1), st.just(0))
steps = st.lists(st.tuples(waits, st.sampled_from(KINDS), st.integers(1, 20_000)), min_size=1, max_size=20)


class TestAgainstTheReferenceModel:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sequence=steps, spare_units=st.integers(0, 12), spare_cents=st.integers(0, PRICE - 1))
    async def test_random_heartbeats_are_charged_what_the_model_charges(
        self, player: Player, sequence: list[Step], spare_units: int, spare_cents: int
    ):
        funds = PRICE + spare_units * PRICE + spare_cents
        viewer = player.user()
        await player.top_up(viewer, funds)
        video_id = await self._paid_video(player)
        session = await player.started(viewer, video_id)
        sid = session["session_id"]
        model = ReferenceSession(funds=funds, last_heartbeat=player.clock())
        model.pay_due_units()  # unit 0, at the start
        sent: list[tuple[int, bool]] = [(0, True)]

        for wait, kind, distance in sequence:
            player.clock.advance(wait / 1000)
            position, playing = sent[-1][0], True
            if kind == "play":
                position += wait
            elif kind in ("pause", "buffer"):
                playing = False
            elif kind == "seek_forward":
                position += wait + distance
            elif kind == "seek_back":
                position = max(0, position - distance)
            elif kind == "duplicate":
                playing = sent[-1][1]
            elif kind == "stale":
                position, playing = sent[-1 - distance % len(sent)]
            sent.append((position, playing))
            state = "playing" if playing else ("paused" if kind == "pause" else "buffering")

            reply = await player.beat_ok(viewer, sid, position / 1000, state)
            model.heartbeat(player.clock(), position, playing)

            assert reply["status"] == model.status
            assert reply["billed_minutes"] == model.billed
            assert reply["charged_total"] == model.billed * PRICE
            assert reply["watched_s"] == model.watched / 1000

        after_start = len(model.charges) - 1
        event(f"ended {model.status}")
        event(f"units charged after the start: {after_start if after_start <= 5 else '5+'}")
        assert await player.charged_units(viewer, sid) == model.charges
        assert await player.balance(viewer) == model.funds
        # Never more watch time than wall-clock time since the session began.
        assert model.watched <= sum(wait for wait, _, _ in sequence)
        await player.end(viewer, sid)

    async def _paid_video(self, player: Player) -> str:
        # One video for every example (making one costs a few catalog round trips).
        if "paid" not in _videos:
            _videos["paid"] = await player.video()
        return _videos["paid"]


_videos: dict[str, str] = {}


class TestMalformedHeartbeats:
    """Heartbeats are answered before FastAPI's routing when well formed; the rest get FastAPI's
    usual answers (the fast path hands them on untouched)."""

    async def test_invalid_fields_are_422_with_the_fields_named(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]

        response = await player.client.post(
            f"/playback/sessions/{sid}/heartbeat",
            json={"position_s": -1, "state": "rewinding"},
            headers=viewer.headers,
        )

        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert {tuple(error["loc"]) for error in response.json()["errors"]} == {
            ("body", "position_s"),
            ("body", "state"),
        }

    async def test_a_body_that_is_not_json_is_422(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]

        response = await player.client.post(
            f"/playback/sessions/{sid}/heartbeat",
            content=b"position=3",
            headers={**viewer.headers, "content-type": "application/json"},
        )

        assert response.status_code == 422

    async def test_no_token_is_401_and_a_bad_session_id_is_422(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        body = {"position_s": 1, "state": "playing"}

        anonymous = await player.client.post(f"/playback/sessions/{sid}/heartbeat", json=body)
        forged = await player.client.post(
            f"/playback/sessions/{sid}/heartbeat", json=body, headers={"Authorization": "Bearer nonsense"}
        )
        bad_id = await player.client.post(
            "/playback/sessions/not-a-uuid/heartbeat", json=body, headers=viewer.headers
        )

        assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
        assert forged.status_code == 401 and forged.headers["content-type"] == "application/problem+json"
        assert bad_id.status_code == 422

    async def test_heartbeats_are_counted_by_route_template(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        await player.beat_ok(viewer, sid, 0)

        metrics = (await player.client.get("/metrics")).text

        assert 'route="/playback/sessions/{session_id}/heartbeat"' in metrics
        assert sid not in metrics
