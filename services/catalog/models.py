"""Catalog tables: videos (with their full-text search vector), comments with one level of replies,
and one reaction per user on a video or a comment.

The counters on videos and comments are denormalised: they change only in the transaction that
inserted or deleted the rows they count (see repository.py), and CHECK constraints keep them >= 0.
Hand-written migrations mirror this file; ``tests/catalog/test_migrations.py`` compares the two.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlmodel import Field, SQLModel

from common.columns import counter_field, one_of, timestamp_field
from common.db import table_registry
from common.outbox import outbox_table


class CatalogTable(SQLModel, registry=table_registry()):
    """Base of every catalog table: its own registry, so its metadata holds only catalog's tables."""


metadata = CatalogTable.metadata


class VideoStatus(StrEnum):
    awaiting_upload = "awaiting_upload"
    uploading = "uploading"
    processing = "processing"
    ready = "ready"
    failed = "failed"


class Visibility(StrEnum):
    public = "public"  # listed and searchable once ready
    unlisted = "unlisted"  # anyone with the id may watch; never listed nor searchable
    private = "private"  # its creator and admins only; 404 for everyone else


class ReactionKind(StrEnum):
    like = "like"
    dislike = "dislike"


# Limits shared by the schemas (which explain them to clients) and the CHECK constraints (which
# hold them whatever writes the rows).
TITLE_MAX = 200
DESCRIPTION_MAX = 5000
TAGS_MAX = 20
TAG_MAX = 30
COMMENT_MAX = 2000
# Auth's display names are at most this long.
AUTHOR_NAME_MAX = 64
FAILURE_REASON_MAX = 500
# Upper bound of price_per_minute, in cents: USD 100.00 per minute. A typo of a few zeros must not
# drain a viewer's wallet in one unit; the wallet side still never goes below zero.
PRICE_PER_MINUTE_MAX = 10_000
CURRENCY = "USD"

# The text search configuration of the stored vector; queries must use the same one.
SEARCH_CONFIG = "english"
# Generated columns may only call IMMUTABLE functions; array_to_string is STABLE (it formats any
# element type), so migration 0002 defines this wrapper for text[] (immutable for text).
TAGS_TEXT_FUNCTION = "catalog_tags_text"
SEARCH_VECTOR_SQL = (
    f"setweight(to_tsvector('{SEARCH_CONFIG}'::regconfig, title), 'A') || "
    f"setweight(to_tsvector('{SEARCH_CONFIG}'::regconfig, {TAGS_TEXT_FUNCTION}(tags)), 'B') || "
    f"setweight(to_tsvector('{SEARCH_CONFIG}'::regconfig, description), 'C')"
)

_PUBLIC_READY = text("visibility = 'public' AND status = 'ready'")


class Video(CatalogTable, table=True):
    __tablename__ = "videos"
    __table_args__ = (
        CheckConstraint(one_of("status", VideoStatus), name="status"),
        CheckConstraint(one_of("visibility", Visibility), name="visibility"),
        CheckConstraint(f"char_length(title) BETWEEN 1 AND {TITLE_MAX}", name="title_length"),
        CheckConstraint(f"char_length(description) <= {DESCRIPTION_MAX}", name="description_length"),
        CheckConstraint(f"cardinality(tags) <= {TAGS_MAX}", name="tag_count"),
        CheckConstraint(f"price_per_minute BETWEEN 0 AND {PRICE_PER_MINUTE_MAX}", name="price_per_minute"),
        # Progress exists only while processing, and is a percentage.
        CheckConstraint(
            "progress IS NULL OR (progress BETWEEN 0 AND 100 AND status = 'processing')",
            name="progress",
        ),
        CheckConstraint("status <> 'failed' OR failure_reason IS NOT NULL", name="failed_has_reason"),
        CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="duration_non_negative"),
        CheckConstraint(
            "view_count >= 0 AND like_count >= 0 AND dislike_count >= 0 AND comment_count >= 0",
            name="counters_non_negative",
        ),
        # Keyset pagination: the studio list (every video of one creator, newest first) ...
        Index("ix_videos_creator_created", "creator_id", text("created_at DESC"), text("id DESC")),
        # ... and the public lists, which only ever hold public + ready rows (partial indexes).
        Index(
            "ix_videos_public_published",
            text("published_at DESC"),
            text("id DESC"),
            postgresql_where=_PUBLIC_READY,
        ),
        Index(
            "ix_videos_public_views", text("view_count DESC"), text("id DESC"), postgresql_where=_PUBLIC_READY
        ),
        Index(
            "ix_videos_public_creator_published",
            "creator_id",
            text("published_at DESC"),
            text("id DESC"),
            postgresql_where=_PUBLIC_READY,
        ),
        # The stall sweep: videos processing, by when the transcoder was last heard of (0005).
        Index("ix_videos_processing_updated", "updated_at", postgresql_where=text("status = 'processing'")),
        CheckConstraint("transcode_restarts >= 0", name="transcode_restarts_non_negative"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # The auth service's user id (no foreign key: users live in another service's database).
    creator_id: uuid.UUID
    title: str
    description: str = ""
    tags: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String()), nullable=False, server_default=text("'{}'::varchar[]")),
    )
    visibility: str
    status: str = Field(default=VideoStatus.awaiting_upload.value)
    progress: int | None = Field(default=None, sa_column=Column(SmallInteger, nullable=True))
    failure_reason: str | None = None
    # Times the stall sweep handed the video to the transcoders again (tasks.recover_stalled_videos).
    transcode_restarts: int = Field(
        default=0, sa_column=Column(SmallInteger, nullable=False, server_default=text("0"))
    )
    price_per_minute: int = 0
    duration_s: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    # [{name, width, height, bandwidth}], as reported by the transcoder.
    renditions: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    thumbnail_key: str | None = None
    # The uploaded original, under uploads/{id}/ (recorded when the upload completes).
    source_key: str | None = None
    view_count: int = counter_field(BigInteger)
    like_count: int = counter_field()
    dislike_count: int = counter_field()
    comment_count: int = counter_field()
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    # When it first became ready: "newest" in public lists means newest published.
    published_at: datetime | None = timestamp_field(nullable=True)


# The search vector is generated by PostgreSQL and only ever read inside queries, so it is a column
# of the table but not a field of the mapped class (rows never carry it into Python).
videos_table: Table = Video.__table__  # type: ignore[attr-defined]
search_vector = Column("search_vector", TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), nullable=True)
videos_table.append_column(search_vector)
Index("ix_videos_search_vector", search_vector, postgresql_using="gin")


class Comment(CatalogTable, table=True):
    __tablename__ = "comments"
    __table_args__ = (
        CheckConstraint(f"char_length(body) BETWEEN 1 AND {COMMENT_MAX}", name="body_length"),
        CheckConstraint(
            "reply_count >= 0 AND like_count >= 0 AND dislike_count >= 0", name="counters_non_negative"
        ),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        # Top-level comments (parent_id IS NULL) and one comment's replies, both by keyset; the
        # video_id prefix also serves the cascade when a video is deleted.
        Index("ix_comments_thread", "video_id", "parent_id", "created_at", "id"),
        # The cascade when a top-level comment is deleted.
        Index("ix_comments_parent_id", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    video_id: uuid.UUID = Field(sa_column=Column(ForeignKey("videos.id", ondelete="CASCADE"), nullable=False))
    author_id: uuid.UUID
    # The author's display name when the comment was written (the token's name claim).
    author_name: str | None = Field(default=None, max_length=AUTHOR_NAME_MAX)
    # One level of replies: a reply's parent is always a top-level comment of the same video.
    parent_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(ForeignKey("comments.id", ondelete="CASCADE"), nullable=True)
    )
    body: str
    reply_count: int = counter_field()
    like_count: int = counter_field()
    dislike_count: int = counter_field()
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    edited_at: datetime | None = timestamp_field(nullable=True)


class VideoReaction(CatalogTable, table=True):
    """One like or dislike per user and video: the primary key makes it one, whatever races."""

    __tablename__ = "video_reactions"
    __table_args__ = (CheckConstraint(one_of("kind", ReactionKind), name="kind"),)

    video_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True, nullable=False)
    )
    user_id: uuid.UUID = Field(primary_key=True)
    kind: str
    created_at: datetime = timestamp_field()


class CommentReaction(CatalogTable, table=True):
    __tablename__ = "comment_reactions"
    __table_args__ = (CheckConstraint(one_of("kind", ReactionKind), name="kind"),)

    comment_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("comments.id", ondelete="CASCADE"), primary_key=True, nullable=False)
    )
    user_id: uuid.UUID = Field(primary_key=True)
    kind: str
    created_at: datetime = timestamp_field()


class UploadState(StrEnum):
    active = "active"  # receiving bytes (tus PATCH); may be resumed, terminated or expire
    completed = "completed"  # every byte stored and the file handed to the video's lifecycle


UPLOAD_METADATA_MAX = 4096


class Upload(CatalogTable, table=True):
    """A resumable (tus) upload of a video's source file into a multipart upload.

    ``upload_offset`` counts the bytes that are durable: the recorded ``parts`` (stored multipart
    parts, ``[{"part_number", "etag", "size"}]``) plus the first ``tail_size`` bytes of the tail
    object, which holds what is too small to be a part yet (S3 parts but the last are >= 5 MiB).
    Each step that stores bytes moves it with a compare-and-set, so a PATCH that dies leaves the
    offset at the last stored step and the client resumes from there. One upload per video.
    """

    __tablename__ = "uploads"
    __table_args__ = (
        CheckConstraint(one_of("state", UploadState), name="state"),
        CheckConstraint("length >= 0", name="length_non_negative"),
        CheckConstraint("upload_offset BETWEEN 0 AND length", name="offset_within_length"),
        CheckConstraint("tail_size BETWEEN 0 AND upload_offset", name="tail_within_offset"),
        CheckConstraint("part_numbers_used BETWEEN 0 AND 10000", name="part_numbers"),
        CheckConstraint(
            f"upload_metadata IS NULL OR char_length(upload_metadata) <= {UPLOAD_METADATA_MAX}",
            name="metadata_length",
        ),
        # The expiry sweep reads active uploads by deadline.
        Index("ix_uploads_expires_at", "expires_at", postgresql_where=text("state = 'active'")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    video_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("videos.id", ondelete="CASCADE"), nullable=False, unique=True)
    )
    creator_id: uuid.UUID
    state: str = Field(default=UploadState.active.value)
    length: int = Field(sa_column=Column(BigInteger, nullable=False))
    upload_offset: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    tail_size: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    # The object holding the tail; a fresh key per write, so a writer that lost the race for the
    # offset can never overwrite the tail the winner recorded.
    tail_key: str | None = None
    storage_key: str
    # The storage backend's multipart upload id; None once completed (or for an empty file).
    multipart_id: str | None = None
    parts: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    # Part numbers handed out so far. Each part write takes a fresh number, so two writers racing
    # for the same bytes never overwrite each other's part; only recorded parts are completed.
    part_numbers_used: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    # The client's Upload-Metadata header as sent (tus echoes it on HEAD); never trusted.
    upload_metadata: str | None = None
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    completed_at: datetime | None = timestamp_field(nullable=True)


# Events written with the changes they report, until the relay has put them on the stream.
event_outbox = outbox_table(metadata)
