"""Streaming tables. They arrive with the issue that builds the streaming features."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class StreamingTable(SQLModel, registry=registry()):
    """Base of every streaming table: its own registry, so its metadata holds only streaming's tables."""


metadata = StreamingTable.metadata
