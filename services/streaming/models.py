"""Streaming tables. They arrive with the issue that builds the streaming features."""

from __future__ import annotations

from sqlmodel import SQLModel

from common.db import table_registry


class StreamingTable(SQLModel, registry=table_registry()):
    """Base of every streaming table: its own registry, so its metadata holds only streaming's tables."""


metadata = StreamingTable.metadata
