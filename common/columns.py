"""Column helpers every service's SQLModel tables share (no domain: timestamps, counters, enums)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, Integer, func, text
from sqlmodel import Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp_field(*, nullable: bool = False, server_now: bool = True) -> Any:
    """A timezone-aware timestamp column; non-null ones default to now on both sides (unless
    ``server_now`` is off: then the value is always given by the code)."""
    column = Column(
        DateTime(timezone=True),
        nullable=nullable,
        server_default=func.now() if server_now and not nullable else None,
    )
    if nullable:
        return Field(default=None, sa_column=column)
    if server_now:
        return Field(default_factory=utcnow, sa_column=column)
    return Field(sa_column=column)


def counter_field(kind: type = Integer) -> Any:
    """A non-null counter starting at 0."""
    return Field(default=0, sa_column=Column(kind, nullable=False, server_default=text("0")))


def one_of(column: str, values: type[StrEnum]) -> str:
    """A CHECK constraint's SQL: ``column`` holds one of the enum's values."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"
