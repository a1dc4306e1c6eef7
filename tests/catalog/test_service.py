"""The lifecycle rules and the upload code's hand-off, called the way the upload code will call them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.commit_hooks import after_commit, transaction
from services.catalog import service
from services.catalog.errors import (
    InvalidStorageKey,
    InvalidTransition,
    NotOwner,
    VideoNotFound,
)
from services.catalog.models import VideoStatus
from services.catalog.service import TRANSITIONS, Actor
from tests.catalog.conftest import CatalogDriver, User


def actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=user.role)


class Recorder:
    """An on_committed callback that remembers what it was called with."""

    def __init__(self) -> None:
        self.calls: list[uuid.UUID] = []

    async def __call__(self, video_id: uuid.UUID) -> None:
        self.calls.append(video_id)


class TestLifecycleTable:
    def test_ready_and_failed_are_final(self):
        assert TRANSITIONS[VideoStatus.ready] == frozenset()
        assert TRANSITIONS[VideoStatus.failed] == frozenset()

    def test_every_status_is_reachable_from_awaiting_upload(self):
        reached, frontier = {VideoStatus.awaiting_upload}, [VideoStatus.awaiting_upload]
        while frontier:
            for target in TRANSITIONS[frontier.pop()]:
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        assert reached == set(VideoStatus)


class TestUploadHandOff:
    async def test_the_video_moves_to_processing_and_the_job_is_enqueued_after_the_commit(
        self, catalog: CatalogDriver
    ):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        recorder = Recorder()
        async with transaction(catalog.sessions) as session:
            moved = await service.mark_uploaded(
                session, vid, source_key=f"uploads/{vid}/source.mp4", on_committed=recorder
            )
            assert moved.status == "processing"
            assert recorder.calls == []  # not before the commit
        assert recorder.calls == [vid]
        shown = await catalog.get_video(video["id"])
        assert (shown["status"], shown["progress"]) == ("processing", 0)

    async def test_nothing_is_enqueued_when_the_transaction_rolls_back(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        recorder = Recorder()
        with pytest.raises(RuntimeError):
            async with transaction(catalog.sessions) as session:
                await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/s", on_committed=recorder
                )
                raise RuntimeError("the upload code failed after marking")
        assert recorder.calls == []
        assert (await catalog.get_video(video["id"]))["status"] == "awaiting_upload"

    async def test_a_retried_hand_off_enqueues_again_but_changes_nothing(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        recorder = Recorder()
        for _ in range(2):
            async with transaction(catalog.sessions) as session:
                await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/s", on_committed=recorder
                )
        assert recorder.calls == [vid, vid]
        with pytest.raises(InvalidTransition):
            async with transaction(catalog.sessions) as session:
                await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/other", on_committed=recorder
                )

    async def test_concurrent_hand_offs_move_the_video_once(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        recorder = Recorder()

        async def hand_off() -> str:
            async with transaction(catalog.sessions) as session:
                moved = await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/s", on_committed=recorder
                )
                return moved.status

        assert await asyncio.gather(*(hand_off() for _ in range(5))) == ["processing"] * 5
        assert recorder.calls == [vid] * 5

    async def test_a_finished_video_cannot_be_uploaded_again(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        vid = uuid.UUID(video["id"])
        with pytest.raises(InvalidTransition) as refused:
            async with transaction(catalog.sessions) as session:
                await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/s", on_committed=Recorder()
                )
        assert refused.value.extra == {"current_status": "ready", "requested_status": "processing"}

    async def test_the_source_must_be_under_the_videos_upload_folder(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        for key in (f"uploads/{uuid.uuid4()}/s", f"videos/{vid}/s", f"uploads/{vid}/../x"):
            with pytest.raises(InvalidStorageKey):
                async with transaction(catalog.sessions) as session:
                    await service.mark_uploaded(session, vid, source_key=key, on_committed=Recorder())

    async def test_a_missing_video_is_not_found(self, catalog: CatalogDriver):
        vid = uuid.uuid4()
        with pytest.raises(VideoNotFound):
            async with transaction(catalog.sessions) as session:
                await service.mark_uploaded(
                    session, vid, source_key=f"uploads/{vid}/s", on_committed=Recorder()
                )


class TestUploadSteps:
    async def test_start_abandon_and_restart_an_upload(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        for step, expected in (
            (service.mark_upload_started, "uploading"),
            (service.mark_upload_started, "uploading"),  # a second tus PATCH: harmless
            (service.mark_upload_abandoned, "awaiting_upload"),
            (service.mark_upload_abandoned, "awaiting_upload"),
            (service.mark_upload_started, "uploading"),
        ):
            async with transaction(catalog.sessions) as session:
                assert (await step(session, vid)).status == expected

    async def test_refused_bytes_fail_the_video_with_a_reason(self, catalog: CatalogDriver):
        video = await catalog.create_video(catalog.creator())
        vid = uuid.UUID(video["id"])
        async with transaction(catalog.sessions) as session:
            await service.mark_upload_started(session, vid)
            await service.fail_upload(session, vid, reason="This file is not a video.")
        shown = await catalog.get_video(video["id"])
        assert (shown["status"], shown["failure_reason"]) == ("failed", "This file is not a video.")
        with pytest.raises(InvalidTransition):
            async with transaction(catalog.sessions) as session:
                await service.mark_upload_started(session, vid)

    async def test_only_the_creator_may_upload_and_only_before_it_is_uploaded(self, catalog: CatalogDriver):
        owner = catalog.creator()
        video = await catalog.create_video(owner)
        private = await catalog.create_video(owner, visibility="private")
        ready = await catalog.ready_video(owner)
        async with catalog.sessions() as session:
            allowed = await service.authorize_upload(session, uuid.UUID(video["id"]), actor=actor(owner))
            assert str(allowed.id) == video["id"]
            with pytest.raises(NotOwner):
                await service.authorize_upload(
                    session, uuid.UUID(video["id"]), actor=actor(catalog.user("admin"))
                )
            with pytest.raises(VideoNotFound):
                await service.authorize_upload(
                    session, uuid.UUID(private["id"]), actor=actor(catalog.creator())
                )
            with pytest.raises(InvalidTransition):
                await service.authorize_upload(session, uuid.UUID(ready["id"]), actor=actor(owner))


class TestCommitHooks:
    async def test_one_failing_callback_does_not_stop_the_others(self, catalog: CatalogDriver):
        ran: list[str] = []

        async def broken() -> None:
            raise ConnectionError("redis is down")

        async def fine() -> None:
            ran.append("fine")

        async with transaction(catalog.sessions) as session:
            after_commit(session, broken)
            after_commit(session, fine)
        assert ran == ["fine"]
