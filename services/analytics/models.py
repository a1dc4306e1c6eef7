"""Analytics tables. They arrive with the issue that builds the analytics features."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class AnalyticsTable(SQLModel, registry=registry()):
    """Base of every analytics table: its own registry, so its metadata holds only analytics's tables."""


metadata = AnalyticsTable.metadata
