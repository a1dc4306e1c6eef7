"""Every storage test runs against both backends: a temporary directory and S3 over HTTP (moto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.storage import MIN_PART_SIZE, LocalStorage, S3Storage, Storage
from tests.fixtures_s3 import S3Server, unique_bucket


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """An empty store of each kind; the S3 one streams ``put`` in MIN_PART_SIZE parts."""
    store: Storage
    if request.param == "local":
        store = LocalStorage(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = S3Storage(
            bucket=unique_bucket(),
            endpoint_url=server.endpoint_url,
            region=server.region,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
            path_style=True,
            part_size=MIN_PART_SIZE,
        )
    async with store:
        await store.ensure_bucket()
        yield store
