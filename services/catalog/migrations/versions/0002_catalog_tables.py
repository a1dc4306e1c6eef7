"""Catalog tables: videos (generated, weighted search vector + GIN index, keyset indexes), comments
with one level of replies, and one reaction per user on videos and comments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must keep meaning what it meant when it was written.
SEARCH_VECTOR_SQL = (
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, catalog_tags_text(tags)), 'B') || "
    "setweight(to_tsvector('english'::regconfig, description), 'C')"
)
PUBLIC_READY = sa.text("visibility = 'public' AND status = 'ready'")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=None if nullable else sa.func.now(),
        nullable=nullable,
    )


def _counter(name: str, kind: type = sa.Integer) -> sa.Column:
    return sa.Column(name, kind(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    # Generated columns may call only IMMUTABLE functions. array_to_string is STABLE because it
    # formats arbitrary element types; for text[] its result depends on nothing but its input.
    op.execute(
        """
        CREATE FUNCTION catalog_tags_text(tags varchar[]) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
        AS $$ SELECT array_to_string(tags, ' ') $$
        """
    )
    op.create_table(
        "videos",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("creator_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.String()), server_default=sa.text("'{}'::varchar[]"), nullable=False
        ),
        sa.Column("visibility", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("progress", sa.SmallInteger(), nullable=True),
        sa.Column("failure_reason", sa.String(), nullable=True),
        sa.Column("price_per_minute", sa.Integer(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("renditions", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("thumbnail_key", sa.String(), nullable=True),
        sa.Column("source_key", sa.String(), nullable=True),
        _counter("view_count", sa.BigInteger),
        _counter("like_count"),
        _counter("dislike_count"),
        _counter("comment_count"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("published_at", nullable=True),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(SEARCH_VECTOR_SQL, persisted=True),
            nullable=True,
        ),
        sa.CheckConstraint(
            "status IN ('awaiting_upload', 'uploading', 'processing', 'ready', 'failed')",
            name=op.f("ck_videos_status"),
        ),
        sa.CheckConstraint(
            "visibility IN ('public', 'unlisted', 'private')", name=op.f("ck_videos_visibility")
        ),
        sa.CheckConstraint("char_length(title) BETWEEN 1 AND 200", name=op.f("ck_videos_title_length")),
        sa.CheckConstraint("char_length(description) <= 5000", name=op.f("ck_videos_description_length")),
        sa.CheckConstraint("cardinality(tags) <= 20", name=op.f("ck_videos_tag_count")),
        sa.CheckConstraint("price_per_minute BETWEEN 0 AND 10000", name=op.f("ck_videos_price_per_minute")),
        sa.CheckConstraint(
            "progress IS NULL OR (progress BETWEEN 0 AND 100 AND status = 'processing')",
            name=op.f("ck_videos_progress"),
        ),
        sa.CheckConstraint(
            "status <> 'failed' OR failure_reason IS NOT NULL", name=op.f("ck_videos_failed_has_reason")
        ),
        sa.CheckConstraint(
            "duration_s IS NULL OR duration_s >= 0", name=op.f("ck_videos_duration_non_negative")
        ),
        sa.CheckConstraint(
            "view_count >= 0 AND like_count >= 0 AND dislike_count >= 0 AND comment_count >= 0",
            name=op.f("ck_videos_counters_non_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_videos"),
    )
    op.create_index(
        "ix_videos_creator_created", "videos", ["creator_id", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "ix_videos_public_published",
        "videos",
        [sa.text("published_at DESC"), sa.text("id DESC")],
        postgresql_where=PUBLIC_READY,
    )
    op.create_index(
        "ix_videos_public_views",
        "videos",
        [sa.text("view_count DESC"), sa.text("id DESC")],
        postgresql_where=PUBLIC_READY,
    )
    op.create_index(
        "ix_videos_public_creator_published",
        "videos",
        ["creator_id", sa.text("published_at DESC"), sa.text("id DESC")],
        postgresql_where=PUBLIC_READY,
    )
    op.create_index("ix_videos_search_vector", "videos", ["search_vector"], postgresql_using="gin")

    op.create_table(
        "comments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("body", sa.String(), nullable=False),
        _counter("reply_count"),
        _counter("like_count"),
        _counter("dislike_count"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("edited_at", nullable=True),
        sa.CheckConstraint("char_length(body) BETWEEN 1 AND 2000", name=op.f("ck_comments_body_length")),
        sa.CheckConstraint(
            "reply_count >= 0 AND like_count >= 0 AND dislike_count >= 0",
            name=op.f("ck_comments_counters_non_negative"),
        ),
        sa.CheckConstraint("parent_id IS NULL OR parent_id <> id", name=op.f("ck_comments_not_own_parent")),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name="fk_comments_video_id_videos", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["comments.id"], name="fk_comments_parent_id_comments", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_comments"),
    )
    op.create_index("ix_comments_thread", "comments", ["video_id", "parent_id", "created_at", "id"])
    op.create_index(
        "ix_comments_parent_id", "comments", ["parent_id"], postgresql_where=sa.text("parent_id IS NOT NULL")
    )

    op.create_table(
        "video_reactions",
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("kind IN ('like', 'dislike')", name=op.f("ck_video_reactions_kind")),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name="fk_video_reactions_video_id_videos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("video_id", "user_id", name="pk_video_reactions"),
    )
    op.create_table(
        "comment_reactions",
        sa.Column("comment_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("kind IN ('like', 'dislike')", name=op.f("ck_comment_reactions_kind")),
        sa.ForeignKeyConstraint(
            ["comment_id"],
            ["comments.id"],
            name="fk_comment_reactions_comment_id_comments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("comment_id", "user_id", name="pk_comment_reactions"),
    )


def downgrade() -> None:
    op.drop_table("comment_reactions")
    op.drop_table("video_reactions")
    op.drop_table("comments")
    op.drop_table("videos")
    op.execute("DROP FUNCTION catalog_tags_text(varchar[])")
