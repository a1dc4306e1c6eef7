"""Billing tables. They arrive with the issue that builds the billing features."""

from __future__ import annotations

from sqlmodel import SQLModel

from common.db import table_registry


class BillingTable(SQLModel, registry=table_registry()):
    """Base of every billing table: its own registry, so its metadata holds only billing's tables."""


metadata = BillingTable.metadata
