"""Analytics tables. They arrive with the issue that builds the analytics features."""

from __future__ import annotations

from sqlmodel import SQLModel

from common.db import table_registry


class AnalyticsTable(SQLModel, registry=table_registry()):
    """Base of every analytics table: its own registry, so its metadata holds only analytics's tables."""


metadata = AnalyticsTable.metadata
