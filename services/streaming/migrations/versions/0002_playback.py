"""Playback sessions (the durable record; live state is in Redis) and each viewer's watch history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "playback_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("viewer_id", sa.Uuid(), nullable=False),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("creator_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("price_per_minute", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("unit_ms", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("billed_units", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("watched_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("position_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'payment_required', 'ended')", name=op.f("ck_playback_sessions_status")
        ),
        sa.CheckConstraint(
            "end_reason IS NULL OR end_reason IN ('ended_by_viewer', 'expired')",
            name=op.f("ck_playback_sessions_end_reason"),
        ),
        sa.CheckConstraint(
            "(status = 'ended') = (ended_at IS NOT NULL)",
            name=op.f("ck_playback_sessions_ended_at_when_ended"),
        ),
        sa.CheckConstraint("price_per_minute >= 0", name=op.f("ck_playback_sessions_price_non_negative")),
        sa.CheckConstraint("unit_ms > 0", name=op.f("ck_playback_sessions_unit_positive")),
        sa.CheckConstraint(
            "billed_units >= 0 AND watched_ms >= 0 AND position_ms >= 0",
            name=op.f("ck_playback_sessions_non_negative"),
        ),
        sa.CheckConstraint("paid OR billed_units = 0", name=op.f("ck_playback_sessions_free_never_billed")),
        sa.CheckConstraint("char_length(currency) = 3", name=op.f("ck_playback_sessions_currency")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playback_sessions")),
    )
    op.create_index(
        "ix_playback_sessions_viewer_started",
        "playback_sessions",
        ["viewer_id", sa.literal_column("started_at DESC")],
    )
    op.create_index(
        "ix_playback_sessions_live",
        "playback_sessions",
        ["started_at"],
        postgresql_where=sa.text("status <> 'ended'"),
    )
    op.create_table(
        "watch_history",
        sa.Column("viewer_id", sa.Uuid(), nullable=False),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("position_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("watched_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("completed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_session_id", sa.Uuid(), nullable=True),
        sa.Column(
            "first_watched_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_watched_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "position_ms >= 0 AND watched_ms >= 0", name=op.f("ck_watch_history_non_negative")
        ),
        sa.PrimaryKeyConstraint("viewer_id", "video_id", name=op.f("pk_watch_history")),
    )
    op.create_index(
        "ix_watch_history_viewer_recent",
        "watch_history",
        ["viewer_id", sa.literal_column("last_watched_at DESC"), sa.literal_column("video_id DESC")],
    )


def downgrade() -> None:
    op.drop_table("watch_history")
    op.drop_table("playback_sessions")
