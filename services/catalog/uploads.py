"""Upload routes: tus 1.0 resumable uploads at ``/uploads`` (core, creation, termination,
expiration; the gateway serves them at ``/api/v1/uploads``) and the one-shot
``PUT /videos/{id}/source``. Thin: they read the protocol's headers, call upload_service, and
answer with the protocol's headers. Every ``/uploads`` response carries ``Tus-Resumable``.

Browsers need these response headers exposed by the gateway's CORS policy: ``EXPOSED_HEADERS``;
and may send ``ALLOWED_REQUEST_HEADERS``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC
from email.utils import format_datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from common.errors import AppError
from services.catalog import upload_service
from services.catalog.api import ActorDep, SettingsDep
from services.catalog.errors import (
    InvalidUploadRequest,
    TusVersionUnsupported,
    UnsupportedUploadType,
    UploadNotFound,
)
from services.catalog.models import UPLOAD_METADATA_MAX, Upload, UploadState
from services.catalog.schemas import UploadRead, VideoRead
from services.catalog.upload_service import Uploads

log = structlog.get_logger("catalog")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
EXPOSED_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
)
ALLOWED_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
)
_DIGITS = re.compile(r"[0-9]{1,19}")
_METADATA_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII but space and comma


class TusRoute(APIRoute):
    """Adds ``Tus-Resumable`` to every response of the route, errors included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except AppError as exc:
                exc.headers = {**exc.headers, "Tus-Resumable": TUS_VERSION}
                raise
            except StarletteHTTPException as exc:
                exc.headers = {**(exc.headers or {}), "Tus-Resumable": TUS_VERSION}
                raise
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return tus_handler


def require_tus_version(request: Request) -> None:
    """tus: every request but OPTIONS names the protocol version; others are refused with 412."""
    if request.method == "OPTIONS":
        return
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise TusVersionUnsupported(headers={"Tus-Version": TUS_VERSION})


def get_uploads(request: Request) -> Uploads:
    uploads: Uploads = request.app.state.uploads
    return uploads


UploadsDep = Annotated[Uploads, Depends(get_uploads)]

tus_router = APIRouter(
    prefix="/uploads", tags=["uploads"], route_class=TusRoute, dependencies=[Depends(require_tus_version)]
)
source_router = APIRouter(prefix="/videos", tags=["uploads"])


# --- header parsing -------------------------------------------------------------------------------


def _size(name: str, value: str | None, *, required: bool = True) -> int | None:
    if value is None:
        if required:
            raise InvalidUploadRequest(f"The {name} header is required.")
        return None
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise InvalidUploadRequest(f"{name} must be a non-negative integer.")
    return int(value)


def parse_metadata(raw: str) -> dict[str, bytes]:
    """tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent)."""
    pairs: dict[str, bytes] = {}
    for item in raw.split(","):
        key, _, value = item.strip().partition(" ")
        if not key or not _METADATA_KEY.fullmatch(key):
            raise InvalidUploadRequest(
                "Upload-Metadata keys must be non-empty ASCII without spaces or commas."
            )
        if key in pairs:
            raise InvalidUploadRequest(f"Upload-Metadata names {key!r} twice.")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True)
        except binascii.Error:
            raise InvalidUploadRequest(f"Upload-Metadata value of {key!r} is not base64.") from None
    return pairs


def _video_id_from(metadata: dict[str, bytes]) -> uuid.UUID:
    raw = metadata.get("video_id")
    if raw is None:
        raise InvalidUploadRequest("Upload-Metadata must name the video: video_id <base64 of its id>.")
    try:
        return uuid.UUID(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidUploadRequest("Upload-Metadata video_id is not a video id.") from None


def _upload_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UploadNotFound() from None


def _state_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.upload_offset), "Cache-Control": "no-store"}
    if upload.state == UploadState.active.value:
        headers["Upload-Expires"] = format_datetime(upload.expires_at.astimezone(UTC), usegmt=True)
    return headers


async def request_body(request: Request, *, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body as it arrives; it simply ends when the client goes away or stalls, so the
    service stores what did arrive and the client resumes after it."""
    stream = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except ClientDisconnect:
                log.info("upload_client_disconnected", path=request.url.path)
                return
            except TimeoutError:
                log.info("upload_client_stalled", path=request.url.path, idle_timeout_s=idle_timeout_s)
                return
            if chunk:
                yield chunk
    finally:
        await stream.aclose()


# --- tus ------------------------------------------------------------------------------------------------


@tus_router.options("", status_code=204)
@tus_router.options("/{upload_id}", status_code=204, include_in_schema=False)
async def tus_options(settings: SettingsDep) -> Response:
    """What this tus server supports: version, extensions and the largest file it accepts."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(settings.max_upload_bytes),
        },
    )


@tus_router.post("", status_code=201, response_model=UploadRead)
async def create_upload(
    actor: ActorDep,
    uploads: UploadsDep,
    settings: SettingsDep,
    upload_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str | None, Header()] = None,
    upload_defer_length: Annotated[str | None, Header()] = None,
) -> Response:
    """Start a resumable upload; ``Upload-Metadata`` must carry ``video_id`` (base64) of your video."""
    if upload_defer_length is not None:
        raise InvalidUploadRequest("Upload-Defer-Length is not supported; send Upload-Length.")
    length = _size("Upload-Length", upload_length)
    assert length is not None
    raw_metadata = (upload_metadata or "").strip()
    if len(raw_metadata) > UPLOAD_METADATA_MAX:
        raise InvalidUploadRequest(f"Upload-Metadata is longer than {UPLOAD_METADATA_MAX} characters.")
    video_id = _video_id_from(parse_metadata(raw_metadata) if raw_metadata else {})
    upload = await upload_service.create_upload(
        uploads, actor=actor, video_id=video_id, length=length, metadata=raw_metadata or None
    )
    return JSONResponse(
        UploadRead.from_model(upload).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"{settings.public_api_prefix}/uploads/{upload.id}", **_state_headers(upload)},
    )


@tus_router.head("/{upload_id}", status_code=200)
async def head_upload(upload_id: str, actor: ActorDep, uploads: UploadsDep) -> Response:
    """How many bytes of the upload are stored (``Upload-Offset``): resume from there."""
    upload = await upload_service.get_upload(uploads, _upload_id(upload_id), actor=actor)
    headers = {**_state_headers(upload), "Upload-Length": str(upload.length)}
    if upload.upload_metadata:
        headers["Upload-Metadata"] = upload.upload_metadata
    return Response(status_code=200, headers=headers)


@tus_router.patch("/{upload_id}", status_code=204)
async def patch_upload(
    upload_id: str,
    request: Request,
    actor: ActorDep,
    uploads: UploadsDep,
    settings: SettingsDep,
    upload_offset: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[str | None, Header()] = None,
) -> Response:
    """Append the body at ``Upload-Offset`` (which must be the server's offset)."""
    if (content_type or "").split(";")[0].strip().lower() != OFFSET_OCTET_STREAM:
        raise UnsupportedUploadType()
    offset = _size("Upload-Offset", upload_offset)
    assert offset is not None
    upload = await upload_service.append_to_upload(
        uploads,
        _upload_id(upload_id),
        actor=actor,
        offset=offset,
        content_length=_size("Content-Length", content_length, required=False),
        body=request_body(request, idle_timeout_s=settings.upload_idle_timeout_s),
    )
    return Response(status_code=204, headers=_state_headers(upload))


@tus_router.delete("/{upload_id}", status_code=204)
async def terminate_upload(upload_id: str, actor: ActorDep, uploads: UploadsDep) -> Response:
    """Drop an unfinished upload and its stored bytes; the video waits for a new upload."""
    await upload_service.terminate_upload(uploads, _upload_id(upload_id), actor=actor)
    return Response(status_code=204)


# --- one-shot ------------------------------------------------------------------------------------------


@source_router.put("/{video_id}/source", response_model=VideoRead)
async def put_source(
    video_id: uuid.UUID,
    request: Request,
    actor: ActorDep,
    uploads: UploadsDep,
    settings: SettingsDep,
    content_length: Annotated[str | None, Header()] = None,
) -> VideoRead:
    """Upload a small file in one request (Content-Length required; larger files use tus)."""
    video = await upload_service.put_source(
        uploads,
        video_id,
        actor=actor,
        content_length=_size("Content-Length", content_length, required=False),
        body=request_body(request, idle_timeout_s=settings.upload_idle_timeout_s),
    )
    return VideoRead.from_model(video, api_prefix=settings.public_api_prefix)


routers = [tus_router, source_router]
