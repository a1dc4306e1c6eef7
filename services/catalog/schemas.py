"""What the catalog accepts and answers. Input is normalised here (trimmed, NFC, tags lower-cased and
de-duplicated) so the service and the database only ever see clean values."""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.catalog.models import (
    COMMENT_MAX,
    CURRENCY,
    DESCRIPTION_MAX,
    FAILURE_REASON_MAX,
    PRICE_PER_MINUTE_MAX,
    TAG_MAX,
    TAGS_MAX,
    TITLE_MAX,
    Comment,
    ReactionKind,
    Upload,
    UploadState,
    Video,
    VideoStatus,
    Visibility,
)

# Longest accepted search query (characters, after trimming).
QUERY_MAX = 200
MAX_RENDITIONS = 8
# 24 hours: longer sources are refused by the upload limits long before this.
MAX_DURATION_S = 24 * 3600.0
_WHITESPACE = re.compile(r"\s+")
_RENDITION_NAME = r"^[a-z0-9][a-z0-9_-]{0,15}$"


def _refuse_control_characters(value: str, *, allow: str = "") -> str:
    for char in value:
        if char in allow:
            continue
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    return value


def clean_line(value: str) -> str:
    """One line of text: NFC, trimmed, no control characters (newlines and tabs included)."""
    value = unicodedata.normalize("NFC", value).strip()
    return _refuse_control_characters(value)


def clean_multiline(value: str) -> str:
    """Free text: NFC, trimmed, line endings as \\n; newlines and tabs are its only control characters."""
    value = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n").strip()
    return _refuse_control_characters(value, allow="\n\t")


def clean_tag(value: str) -> str:
    """A tag: one line, inner whitespace collapsed, lower-case."""
    value = _WHITESPACE.sub(" ", clean_line(value)).lower()
    if not value:
        raise ValueError("a tag must not be empty")
    if len(value) > TAG_MAX:
        raise ValueError(f"a tag has at most {TAG_MAX} characters")
    return value


def clean_tags(values: list[str]) -> list[str]:
    """Each tag cleaned; duplicates (after cleaning) dropped, first occurrence kept."""
    return list(dict.fromkeys(clean_tag(value) for value in values))


def _bounded(minimum: int, maximum: int) -> Any:
    def check(value: str) -> str:
        if not minimum <= len(value) <= maximum:
            raise ValueError(f"must have {minimum}..{maximum} characters after trimming")
        return value

    return AfterValidator(check)


# Raw input lengths are bounded before cleaning (a megabyte of spaces is refused, not trimmed).
Title = Annotated[str, Field(max_length=TITLE_MAX * 4), AfterValidator(clean_line), _bounded(1, TITLE_MAX)]
Description = Annotated[
    str, Field(max_length=DESCRIPTION_MAX * 2), AfterValidator(clean_multiline), _bounded(0, DESCRIPTION_MAX)
]
Tags = Annotated[
    list[Annotated[str, Field(max_length=TAG_MAX * 4)]],
    Field(max_length=TAGS_MAX),
    AfterValidator(clean_tags),
]
Price = Annotated[int, Field(ge=0, le=PRICE_PER_MINUTE_MAX, strict=True)]
CommentBody = Annotated[
    str, Field(max_length=COMMENT_MAX * 2), AfterValidator(clean_multiline), _bounded(1, COMMENT_MAX)
]
SearchQuery = Annotated[
    str, Field(max_length=QUERY_MAX * 2), AfterValidator(clean_line), _bounded(1, QUERY_MAX)
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoCreate(_Input):
    title: Title
    description: Description = ""
    tags: Tags = Field(default_factory=list)
    visibility: Visibility = Visibility.public
    # Integer cents per minute watched, 0 (free) .. PRICE_PER_MINUTE_MAX.
    price_per_minute: Price = 0


class VideoUpdate(_Input):
    """Only the fields present change; none of them may be null."""

    title: Title | None = None
    description: Description | None = None
    tags: Tags | None = None
    visibility: Visibility | None = None
    price_per_minute: Price | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep its value")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class RenditionRead(BaseModel):
    """One rung of the HLS ladder."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=_RENDITION_NAME)]
    width: Annotated[int, Field(ge=1, le=16384)]
    height: Annotated[int, Field(ge=1, le=16384)]
    # Peak bits per second, as in the master playlist's BANDWIDTH.
    bandwidth: Annotated[int, Field(ge=1, le=1_000_000_000)]


class VideoCounters(BaseModel):
    views: int
    likes: int
    dislikes: int
    comments: int


class VideoRead(BaseModel):
    id: uuid.UUID
    creator_id: uuid.UUID
    title: str
    description: str
    tags: list[str]
    visibility: Visibility
    status: VideoStatus
    # 0..100 while processing, null otherwise.
    progress: int | None
    # Why processing failed, in words a creator can act on; null unless status is "failed".
    failure_reason: str | None
    duration_s: float | None
    renditions: list[RenditionRead]
    thumbnail_url: str | None
    price_per_minute: int
    currency: str = CURRENCY
    counters: VideoCounters
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    # The caller's own like or dislike (null when none, or when anonymous).
    my_reaction: ReactionKind | None = None

    @classmethod
    def from_model(
        cls, video: Video, *, api_prefix: str, my_reaction: ReactionKind | None = None
    ) -> VideoRead:
        return cls(
            id=video.id,
            creator_id=video.creator_id,
            title=video.title,
            description=video.description,
            tags=list(video.tags),
            visibility=Visibility(video.visibility),
            status=VideoStatus(video.status),
            progress=video.progress,
            failure_reason=video.failure_reason,
            duration_s=video.duration_s,
            renditions=[RenditionRead.model_validate(item) for item in video.renditions],
            thumbnail_url=f"{api_prefix}/videos/{video.id}/thumbnail" if video.thumbnail_key else None,
            price_per_minute=video.price_per_minute,
            counters=VideoCounters(
                views=video.view_count,
                likes=video.like_count,
                dislikes=video.dislike_count,
                comments=video.comment_count,
            ),
            created_at=video.created_at,
            updated_at=video.updated_at,
            published_at=video.published_at,
            my_reaction=my_reaction,
        )


class VideoCreated(VideoRead):
    """A new video, and where to send its file."""

    # The tus 1.0 creation endpoint (POST there, then PATCH the returned Location).
    upload_url: str
    upload_protocol: Literal["tus"] = "tus"
    # Send these as tus Upload-Metadata (each value base64-encoded on the wire): the upload
    # names the video it belongs to, and only the video's creator may upload to it.
    upload_metadata: dict[str, str]


class VideoPage(BaseModel):
    items: list[VideoRead]
    # Pass as ?cursor= for the next page; null on the last page.
    next_cursor: str | None


class CommentCreate(_Input):
    body: CommentBody
    # A top-level comment of the same video to reply to; replies cannot be replied to.
    parent_id: uuid.UUID | None = None


class CommentUpdate(_Input):
    body: CommentBody


class CommentRead(BaseModel):
    id: uuid.UUID
    video_id: uuid.UUID
    author_id: uuid.UUID
    # The author's display name when they wrote it (null for comments from before names).
    author_name: str | None
    parent_id: uuid.UUID | None
    body: str
    reply_count: int
    likes: int
    dislikes: int
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None

    @classmethod
    def from_model(cls, comment: Comment) -> CommentRead:
        return cls(
            id=comment.id,
            video_id=comment.video_id,
            author_id=comment.author_id,
            author_name=comment.author_name,
            parent_id=comment.parent_id,
            body=comment.body,
            reply_count=comment.reply_count,
            likes=comment.like_count,
            dislikes=comment.dislike_count,
            created_at=comment.created_at,
            updated_at=comment.updated_at,
            edited_at=comment.edited_at,
        )


class CommentPage(BaseModel):
    items: list[CommentRead]
    next_cursor: str | None


class ReactionUpdate(_Input):
    kind: ReactionKind


class ReactionRead(BaseModel):
    """The caller's reaction after the change, and the target's counters."""

    reaction: ReactionKind | None
    likes: int
    dislikes: int


# --- internal (transcoder hand-off, other services) --------------------------------------------


class ProgressUpdate(_Input):
    progress: Annotated[int, Field(ge=0, le=100, strict=True)]


class ProgressRead(BaseModel):
    status: VideoStatus
    # The recorded progress: reports lower than it are ignored (progress never goes backwards).
    progress: int | None


class TranscodeResult(_Input):
    """The transcoder's verdict. Idempotent: the same result twice is accepted twice."""

    status: Literal["ready", "failed"]
    duration_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)] | None = None
    renditions: Annotated[list[RenditionRead], Field(max_length=MAX_RENDITIONS)] = Field(default_factory=list)
    # thumbnails/{id}.jpg or a key under videos/{id}/ (so deleting the video removes it).
    thumbnail_key: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    failure_reason: (
        Annotated[str, AfterValidator(clean_multiline), _bounded(1, FAILURE_REASON_MAX)] | None
    ) = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status == "ready":
            if self.duration_s is None or not self.renditions:
                raise ValueError("a ready result needs duration_s and at least one rendition")
            if self.failure_reason is not None:
                raise ValueError("a ready result has no failure_reason")
            names = [rendition.name for rendition in self.renditions]
            if len(set(names)) != len(names):
                raise ValueError("rendition names must be unique")
        elif self.failure_reason is None:
            raise ValueError("a failed result needs a failure_reason")
        return self


class ViewsIncrement(_Input):
    count: Annotated[int, Field(ge=1, le=10_000, strict=True)] = 1


class VideoInternalRead(BaseModel):
    """What other services need to know about a video (never exposed through the gateway)."""

    id: uuid.UUID
    creator_id: uuid.UUID
    status: VideoStatus
    visibility: Visibility
    price_per_minute: int
    currency: str = CURRENCY
    duration_s: float | None
    renditions: list[RenditionRead]
    source_key: str | None
    thumbnail_key: str | None
    hls_master_key: str | None

    @classmethod
    def from_model(cls, video: Video) -> VideoInternalRead:
        return cls(
            id=video.id,
            creator_id=video.creator_id,
            status=VideoStatus(video.status),
            visibility=Visibility(video.visibility),
            price_per_minute=video.price_per_minute,
            duration_s=video.duration_s,
            renditions=[RenditionRead.model_validate(item) for item in video.renditions],
            source_key=video.source_key,
            thumbnail_key=video.thumbnail_key,
            hls_master_key=f"videos/{video.id}/master.m3u8" if video.status == "ready" else None,
        )


class UploadRead(BaseModel):
    """A resumable upload (the body of ``POST /uploads``; tus clients only read its headers)."""

    id: uuid.UUID
    video_id: uuid.UUID
    state: UploadState
    offset: int
    length: int
    expires_at: datetime | None

    @classmethod
    def from_model(cls, upload: Upload) -> UploadRead:
        active = upload.state == UploadState.active.value
        return cls(
            id=upload.id,
            video_id=upload.video_id,
            state=UploadState(upload.state),
            offset=upload.upload_offset,
            length=upload.length,
            expires_at=upload.expires_at if active else None,
        )
