"""The catalog's internal API as the transcoder uses it (``/internal/videos/{id}``...).

The shapes are spelled out here rather than imported from ``services.catalog``: the transcoder
is deployed on its own and talks to the catalog over HTTP only. The tests run against the real
catalog app, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from common.internal import ServiceClient
from transcoder.errors import CatalogRejected, NoLongerProcessing, TransientError, VideoGone

log = structlog.get_logger("transcoder")


@dataclass(frozen=True, slots=True)
class VideoInfo:
    id: uuid.UUID
    status: str
    source_key: str | None


class CatalogClient:
    """Typed calls over a :class:`ServiceClient` with the transcoder's service credential."""

    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def video(self, video_id: uuid.UUID) -> VideoInfo:
        response = await self._call("GET", f"/internal/videos/{video_id}")
        if response.status_code != 200:
            self._raise_for(response, what="read the video")
        body = response.json()
        return VideoInfo(id=video_id, status=str(body["status"]), source_key=body.get("source_key"))

    async def report_progress(self, video_id: uuid.UUID, progress: int) -> None:
        """Best effort: a lost progress report is logged, not fatal; 404/409 stop the job."""
        try:
            response = await self._call(
                "POST", f"/internal/videos/{video_id}/progress", json={"progress": progress}
            )
        except TransientError as exc:
            log.warning("progress_report_failed", progress=progress, error=str(exc))
            return
        if response.status_code == 200:
            return
        if response.status_code in (404, 409):
            self._raise_for(response, what="report progress")
        log.warning("progress_report_refused", progress=progress, status=response.status_code)

    async def report_result(self, video_id: uuid.UUID, result: dict[str, Any]) -> None:
        """Idempotent on the catalog's side, so it is sent with an Idempotency-Key and retried."""
        response = await self._call(
            "POST",
            f"/internal/videos/{video_id}/transcode-result",
            json=result,
            headers={"Idempotency-Key": f"transcode-result:{video_id}:{result['status']}"},
        )
        if response.status_code != 200:
            self._raise_for(response, what="report the result")

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise TransientError(f"catalog unreachable: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    def _raise_for(response: httpx.Response, *, what: str) -> None:
        status = response.status_code
        if status == 404:
            raise VideoGone()
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").endswith("json"):
            try:
                body = response.json()
            except ValueError:
                body = {}
        if status == 409:
            raise NoLongerProcessing(str(body.get("current_status") or body.get("code") or "final"))
        # 401/403 are a deployment mistake (INTERNAL_SECRET); retried so an operator can fix it.
        if status >= 500 or status in (401, 403, 408, 429):
            raise TransientError(f"catalog answered {status} when asked to {what}")
        raise CatalogRejected(f"catalog refused to {what}: {status} {response.text[:500]}")
