"""Resumable (tus) uploads: one row per video's upload, with its durable offset, its stored
multipart parts and the small tail not yet a part, and an expiry for abandoned uploads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("creator_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("upload_offset", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("tail_size", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tail_key", sa.String(), nullable=True),
        sa.Column("storage_key", sa.String(), nullable=False),
        sa.Column("multipart_id", sa.String(), nullable=True),
        sa.Column("parts", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("part_numbers_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("upload_metadata", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('active', 'completed')", name=op.f("ck_uploads_state")),
        sa.CheckConstraint("length >= 0", name=op.f("ck_uploads_length_non_negative")),
        sa.CheckConstraint(
            "upload_offset BETWEEN 0 AND length", name=op.f("ck_uploads_offset_within_length")
        ),
        sa.CheckConstraint(
            "tail_size BETWEEN 0 AND upload_offset", name=op.f("ck_uploads_tail_within_offset")
        ),
        sa.CheckConstraint("part_numbers_used BETWEEN 0 AND 10000", name=op.f("ck_uploads_part_numbers")),
        sa.CheckConstraint(
            "upload_metadata IS NULL OR char_length(upload_metadata) <= 4096",
            name=op.f("ck_uploads_metadata_length"),
        ),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name="fk_uploads_video_id_videos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.UniqueConstraint("video_id", name="uq_uploads_video_id"),
    )
    op.create_index(
        "ix_uploads_expires_at", "uploads", ["expires_at"], postgresql_where=sa.text("state = 'active'")
    )


def downgrade() -> None:
    op.drop_table("uploads")
