"""Prometheus's own tools for the observability tests: Debian's ``prometheus`` package (promtool and
the server; `make system-deps` installs it). Without it the tests skip on a laptop, but fail in CI
(CI=true), where a missing tool must not pass for a green run."""

from __future__ import annotations

import os
import shutil

import pytest

# The transcoder's test catalog, clips and work folder (test_transcoder_metrics.py).
from tests.transcoder.conftest import catalog_servers, clips, local_catalog, work_dir  # noqa: F401


def prometheus_tool(name: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package `prometheus`; `make system-deps` installs it)"
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> str:
    return prometheus_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_server() -> str:
    return prometheus_tool("prometheus")
