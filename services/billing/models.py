"""Billing tables. They arrive with the issue that builds the billing features."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class BillingTable(SQLModel, registry=registry()):
    """Base of every billing table: its own registry, so its metadata holds only billing's tables."""


metadata = BillingTable.metadata
