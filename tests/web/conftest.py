"""One `streamify up` (a real process tree on free ports) shared by the browser tests, with short
billing units so a paid video runs a wallet dry in seconds, and Debian's Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.conftest import ROOT
from tests.e2e.test_stack import RUN, Stack, _port_range, _stack_env, drop_stack_databases
from tests.web.browser import CHROMIUM, chromium

UNIT_S = 2
HEARTBEAT_S = 1


def _missing(what: str) -> None:
    """Skip on a developer's machine; in CI a missing browser or build is a broken set-up."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: `make install system-deps` should have provided it")
    pytest.skip(what)


@pytest.fixture(scope="package")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (ROOT / "web" / "dist" / "index.html").exists():
        _missing("the web app is not built (web/dist)")
    if shutil.which("ffmpeg") is None:
        _missing("ffmpeg is not installed")
    prefix = f"streamify_web_{RUN}_{uuid.uuid4().hex[:6]}"
    env = _stack_env(prefix)
    env.update(
        {
            "BILLING_UNIT_SECONDS": str(UNIT_S),
            "HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_S),
            # Every test signs people up from one address: the per-IP credential limits are
            # tested elsewhere and would only slow these journeys down.
            "GATEWAY_ROUTE_CLASSES": json.dumps({"auth": {"rate_ip": "1000/minute"}}),
            "AUTH_LOGIN_RATE_PER_IP": "1000/minute",
        }
    )
    stack = Stack(tmp_path_factory.mktemp("web-stack"), _port_range(), env)
    try:
        stack.start()
        yield stack
    finally:
        stack.kill()
        asyncio.run(drop_stack_databases(prefix))


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        _missing("Debian's chromium is not installed")
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the page screenshots go: STREAMIFY_SCREENSHOTS (`make screenshots` points it at
    docs/screenshots), else a temporary folder."""
    target = os.environ.get("STREAMIFY_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
