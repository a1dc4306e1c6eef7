"""Starting, reading and ending playback sessions: who may watch what, what the first unit costs,
how many sessions a viewer may hold, and that nobody else's session is even acknowledged."""

from __future__ import annotations

import json
import uuid

from services.streaming.credentials import verify_playback_credential
from tests.streaming.conftest import HEARTBEAT_S, MAX_SESSIONS, PRICE, UNIT_S, Player


async def _events_for(player: Player, session_id: str) -> list[dict]:
    await player.relayed()
    entries = await player.redis.xrange("streamify:events")
    events = [json.loads(fields[b"event"]) for _, fields in entries]
    return [event for event in events if event["payload"].get("session_id") == session_id]


class TestStartingAFreeVideo:
    async def test_it_plays_without_any_charge(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)

        response = await player.start(viewer, video_id)

        assert response.status_code == 201, response.text
        session = response.json()
        assert session["video_id"] == video_id
        assert session["status"] == "active"
        assert session["billed_minutes"] == 0 and session["charged_total"] == 0
        assert session["price_per_minute"] == 0 and session["currency"] == "USD"
        assert session["heartbeat_interval_s"] == HEARTBEAT_S
        assert session["billing_unit_s"] == UNIT_S
        assert response.headers["location"] == f"/api/v1/playback/sessions/{session['session_id']}"

    async def test_its_master_url_carries_a_credential_for_this_session_and_video(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)

        session = await player.started(viewer, video_id)

        prefix = f"/api/v1/playback/sessions/{session['session_id']}/"
        assert session["master_url"].startswith(prefix) and session["master_url"].endswith("/master.m3u8")
        credential = session["master_url"][len(prefix) : -len("/master.m3u8")]
        grant = verify_playback_credential(
            player.playback.settings.playback_secret,
            credential,
            session_id=uuid.UUID(session["session_id"]),
            now=player.clock() / 1000,
        )
        assert str(grant.video_id) == video_id
        # At least twice the video's duration, and at least the configured lifetime.
        assert grant.expires_at >= player.clock() // 1000 + player.playback.settings.playback_credential_ttl_s

    async def test_it_counts_a_view_and_announces_the_session(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)

        session = await player.started(viewer, video_id)

        video = await player.catalog.get_video(video_id)
        assert video["counters"]["views"] == 1
        [event] = await _events_for(player, session["session_id"])
        assert event["type"] == "playback.session_started"
        assert event["producer"] == "streaming"
        assert event["payload"]["viewer_id"] == str(viewer.id)
        assert event["payload"]["paid"] is False


class TestStartingAPaidVideo:
    async def test_the_first_unit_is_charged_at_once(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        video_id = await player.video()

        session = await player.started(viewer, video_id)

        assert session["billed_minutes"] == 1
        assert session["charged_total"] == PRICE
        assert session["balance"] == 9 * PRICE
        assert await player.balance(viewer) == 9 * PRICE
        assert await player.charged_units(viewer, session["session_id"]) == [0]

    async def test_an_empty_wallet_gets_402_and_nothing_is_left_behind(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, PRICE - 1)
        video_id = await player.video()

        response = await player.start(viewer, video_id)

        assert response.status_code == 402
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "insufficient_funds"
        assert response.json()["balance"] == PRICE - 1
        assert await player.balance(viewer) == PRICE - 1
        # The refused start holds no session slot: the viewer can still open the maximum.
        free = await player.video(price=0)
        for _ in range(MAX_SESSIONS):
            assert (await player.start(viewer, free)).status_code == 201
        history = await player.history(viewer)
        assert [item["video_id"] for item in history["items"]] == [free]

    async def test_after_a_top_up_the_same_viewer_can_start(self, player: Player):
        viewer = player.user()
        video_id = await player.video()
        assert (await player.start(viewer, video_id)).status_code == 402

        await player.top_up(viewer, PRICE)

        session = await player.started(viewer, video_id)
        assert session["billed_minutes"] == 1 and session["balance"] == 0

    async def test_the_creator_watches_their_own_paid_video_for_free(self, player: Player):
        creator = player.user("creator")
        video_id = await player.video(owner=creator)

        session = await player.started(creator, video_id)

        assert session["billed_minutes"] == 0 and session["charged_total"] == 0
        reply = await player.play(creator, session["session_id"], seconds=5 * UNIT_S)
        assert reply["billed_minutes"] == 0 and reply["charged_total"] == 0
        assert reply["status"] == "active"


class TestWhoMayWatch:
    async def test_an_unknown_video_is_404(self, player: Player):
        response = await player.start(player.user(), str(uuid.uuid4()))

        assert response.status_code == 404
        assert response.json()["code"] == "video_not_found"

    async def test_someone_elses_private_video_is_404(self, player: Player):
        video_id = await player.video(price=0, visibility="private")

        response = await player.start(player.user(), video_id)

        assert response.status_code == 404
        assert response.json()["code"] == "video_not_found"

    async def test_the_owner_and_admins_may_watch_a_private_video(self, player: Player):
        creator = player.user("creator")
        video_id = await player.video(price=0, owner=creator, visibility="private")

        assert (await player.start(creator, video_id)).status_code == 201
        assert (await player.start(player.user("admin"), video_id)).status_code == 201

    async def test_an_unlisted_video_plays_for_anyone_with_its_id(self, player: Player):
        video_id = await player.video(price=0, visibility="unlisted")

        assert (await player.start(player.user(), video_id)).status_code == 201

    async def test_a_video_still_processing_is_409(self, player: Player):
        creator = player.user("creator")
        video = await player.catalog.create_video(creator, price_per_minute=0)
        await player.catalog.upload_done(video["id"])

        response = await player.start(player.user(), video["id"])

        assert response.status_code == 409
        assert response.json()["code"] == "video_not_ready"

    async def test_signing_in_is_required(self, player: Player):
        video_id = await player.video(price=0)

        response = await player.client.post("/playback/sessions", json={"video_id": video_id})

        assert response.status_code == 401


class TestConcurrentSessionLimit:
    async def test_one_more_than_the_limit_is_409_until_one_ends(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        sessions = [await player.started(viewer, video_id) for _ in range(MAX_SESSIONS)]

        refused = await player.start(viewer, video_id)

        assert refused.status_code == 409
        assert refused.json()["code"] == "too_many_sessions"
        assert (await player.end(viewer, sessions[0]["session_id"])).status_code == 200
        assert (await player.start(viewer, video_id)).status_code == 201

    async def test_a_refused_paid_start_charges_nothing(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        video_id = await player.video()
        for _ in range(MAX_SESSIONS):
            await player.started(viewer, video_id)

        assert (await player.start(viewer, video_id)).status_code == 409

        assert await player.balance(viewer) == (10 - MAX_SESSIONS) * PRICE

    async def test_expired_sessions_do_not_count(self, player: Player):
        viewer = player.user()
        video_id = await player.video(price=0)
        for _ in range(MAX_SESSIONS):
            await player.started(viewer, video_id)

        player.clock.advance(HEARTBEAT_S * 3)

        assert (await player.start(viewer, video_id)).status_code == 201

    async def test_other_viewers_have_their_own_limit(self, player: Player):
        video_id = await player.video(price=0)
        first, second = player.user(), player.user()
        for _ in range(MAX_SESSIONS):
            await player.started(first, video_id)

        assert (await player.start(second, video_id)).status_code == 201


class TestReadingAndEnding:
    async def test_the_viewer_reads_their_session(self, player: Player):
        viewer = player.user()
        await player.top_up(viewer, 10 * PRICE)
        session = await player.started(viewer, await player.video())
        await player.play(viewer, session["session_id"], seconds=2.5 * UNIT_S, step_s=0.5)

        read = await player.get(viewer, session["session_id"])

        assert read["status"] == "active"
        assert read["billed_minutes"] == 3
        assert read["charged_total"] == 3 * PRICE
        assert read["watched_s"] == 2.5 and read["position_s"] == 2.5
        assert read["master_url"].startswith(f"/api/v1/playback/sessions/{session['session_id']}/")

    async def test_ending_stops_the_session_and_is_idempotent(self, player: Player):
        viewer = player.user()
        session = await player.started(viewer, await player.video(price=0))
        sid = session["session_id"]

        first = await player.end(viewer, sid)
        again = await player.end(viewer, sid)

        assert first.status_code == 200 and again.status_code == 200
        assert first.json()["status"] == "ended" and first.json()["master_url"] is None
        assert again.json()["status"] == "ended"
        assert (await player.get(viewer, sid))["status"] == "ended"
        reply = await player.beat_ok(viewer, sid, 10.0)
        assert reply["status"] == "ended"
        ended = [e for e in await _events_for(player, sid) if e["type"] == "playback.session_ended"]
        assert len(ended) == 1 and ended[0]["payload"]["reason"] == "ended_by_viewer"

    async def test_an_ended_session_is_still_readable_after_its_live_state_is_gone(self, player: Player):
        viewer = player.user()
        session = await player.started(viewer, await player.video(price=0))
        sid = session["session_id"]
        await player.play(viewer, sid, seconds=4)
        await player.end(viewer, sid)

        await player.redis.delete(f"streaming:session:{sid}")

        read = await player.get(viewer, sid)
        assert read["status"] == "ended" and read["position_s"] == 4 and read["watched_s"] == 4
        assert (await player.beat_ok(viewer, sid, 6))["status"] == "ended"

    async def test_an_unknown_session_is_404(self, player: Player):
        viewer = player.user()
        sid = str(uuid.uuid4())

        assert (
            await player.client.get(f"/playback/sessions/{sid}", headers=viewer.headers)
        ).status_code == 404
        assert (await player.beat(viewer, sid, 1.0)).status_code == 404
        assert (await player.end(viewer, sid)).status_code == 404


class TestSomeoneElsesSession:
    """BOLA: another user's session is 404 on every route, live or ended, and stays untouched."""

    async def test_every_route_answers_404_and_changes_nothing(self, player: Player):
        owner, stranger = player.user(), player.user()
        await player.top_up(owner, 10 * PRICE)
        session = await player.started(owner, await player.video())
        sid = session["session_id"]
        player.clock.advance(1.5)

        read = await player.client.get(f"/playback/sessions/{sid}", headers=stranger.headers)
        beat = await player.beat(stranger, sid, 1.5)
        end = await player.end(stranger, sid)

        for response in (read, beat, end):
            assert response.status_code == 404
            assert response.json()["code"] == "session_not_found"
        mine = await player.get(owner, sid)
        assert mine["status"] == "active" and mine["watched_s"] == 0 and mine["position_s"] == 0
        assert await player.balance(owner) == 9 * PRICE

    async def test_an_ended_session_is_404_for_others_too(self, player: Player):
        owner, stranger = player.user(), player.user()
        sid = (await player.started(owner, await player.video(price=0)))["session_id"]
        await player.end(owner, sid)
        await player.redis.delete(f"streaming:session:{sid}")

        read = await player.client.get(f"/playback/sessions/{sid}", headers=stranger.headers)
        beat = await player.beat(stranger, sid, 1.0)
        end = await player.end(stranger, sid)

        assert [r.status_code for r in (read, beat, end)] == [404, 404, 404]


class TestRevokedTokens:
    async def test_a_revoked_token_cannot_send_heartbeats(self, player: Player):
        viewer = player.user()
        sid = (await player.started(viewer, await player.video(price=0)))["session_id"]
        jti = uuid.uuid4().hex
        token = player.minter.token(viewer.id, "viewer", jti=jti)
        await player.redis.set(f"auth:revoked-jti:{jti}", "1", ex=60)

        response = await player.client.post(
            f"/playback/sessions/{sid}/heartbeat",
            json={"position_s": 1, "state": "playing"},
            headers={"Authorization": f"Bearer {token}"},
        )

        assert response.status_code == 401
        assert response.json()["code"] == "token_revoked"
