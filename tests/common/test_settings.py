"""Configuration: one environment configures the mesh; no placeholder secret reaches production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.billing.settings import BillingSettings
from services.catalog.settings import CatalogSettings


class TestEnvironment:
    def test_prefixed_names_configure_one_service_and_shared_names_all(self, monkeypatch):
        monkeypatch.setenv("REDIS_URL", "redis://shared:6379/0")
        monkeypatch.setenv("CATALOG_REDIS_URL", "redis://catalog-only:6379/0")
        monkeypatch.setenv("CATALOG_DATABASE_URL", "postgresql+asyncpg://u@h/streamify_catalog_x")
        assert CatalogSettings().redis_url == "redis://catalog-only:6379/0"
        assert CatalogSettings().database_url.endswith("streamify_catalog_x")
        assert BillingSettings().redis_url == "redis://shared:6379/0"
        assert BillingSettings().database_url.endswith("/streamify_billing")

    def test_an_unprefixed_database_url_does_not_leak_into_every_service(self, monkeypatch):
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/everything")
        assert CatalogSettings().database_url.endswith("/streamify_catalog")


class TestProductionSecrets:
    def test_the_development_secret_is_refused_in_production(self, monkeypatch):
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.delenv("INTERNAL_SECRET", raising=False)
        with pytest.raises(ValidationError, match="internal_secret"):
            CatalogSettings()

    def test_a_short_secret_is_refused_in_production(self, monkeypatch):
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("INTERNAL_SECRET", "short-but-not-a-placeholder")
        with pytest.raises(ValidationError, match="at least 32"):
            CatalogSettings()

    def test_a_real_secret_is_accepted(self, monkeypatch):
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("INTERNAL_SECRET", "x" * 48)
        assert CatalogSettings().internal_secret == "x" * 48
