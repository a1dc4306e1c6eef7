"""Catalog tables. They arrive with the issue that builds the catalog features."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class CatalogTable(SQLModel, registry=registry()):
    """Base of every catalog table: its own registry, so its metadata holds only catalog's tables."""


metadata = CatalogTable.metadata
