"""Videos stuck in ``processing`` are found and handed to the transcoders again.

A transcoder that dies without a word, or whose result never reaches the catalog (every retry
failed), used to leave its video ``processing`` for ever. ``updated_at`` now moves with every
progress report too, an index finds processing videos by it, and ``transcode_restarts`` counts
how often the stall sweep re-enqueued a video, so a video that stalls every time ends ``failed``
instead of looping.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "videos",
        sa.Column("transcode_restarts", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_videos_transcode_restarts_non_negative"), "videos", "transcode_restarts >= 0"
    )
    op.create_index(
        "ix_videos_processing_updated",
        "videos",
        ["updated_at"],
        postgresql_where=sa.text("status = 'processing'"),
    )


def downgrade() -> None:
    op.drop_index("ix_videos_processing_updated", table_name="videos")
    op.drop_constraint(op.f("ck_videos_transcode_restarts_non_negative"), "videos", type_="check")
    op.drop_column("videos", "transcode_restarts")
