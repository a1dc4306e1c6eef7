"""Comments carry their author's display name as it was when they were written.

The name comes from the access token's ``name`` claim (auth puts the display name there), so
the catalog needs no call to auth to show who wrote what. Comments written before this, or with
a token that has no name, keep NULL and are shown without one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("comments", sa.Column("author_name", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("comments", "author_name")
