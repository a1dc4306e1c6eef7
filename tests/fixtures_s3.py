"""A real S3-compatible server speaking HTTP for tests: moto's standalone server as a subprocess.

``s3_server`` (session scope) starts it once on a free loopback port and stops it at the end.
Use ``s3_server.settings(bucket)`` for a ``StorageSettings`` or ``s3_server.env(bucket)`` for the
environment variables a service or worker process reads. Only tests import moto (through this
subprocess); the application talks to it as to any S3 endpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from common.storage import MIN_PART_SIZE, StorageSettings
from streamify.embedded import free_port as _free_port

STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens and the (dummy) credentials it accepts."""

    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = "test-access-key"
    secret_access_key: str = "test-secret-key"  # moto accepts any key

    def settings(self, bucket: str | None = None) -> StorageSettings:
        """StorageSettings for ``bucket`` (a fresh unique name when omitted) on this server."""
        return StorageSettings(
            storage_backend="s3",
            s3_endpoint_url=self.endpoint_url,
            s3_region=self.region,
            s3_bucket=bucket or unique_bucket(),
            s3_access_key_id=self.access_key_id,
            s3_secret_access_key=SecretStr(self.secret_access_key),
            s3_path_style=True,
        )

    def env(self, bucket: str | None = None) -> dict[str, str]:
        """STORAGE_BACKEND=s3 and the S3_* variables for ``bucket`` on this server."""
        return {
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": self.region,
            "S3_BUCKET": bucket or unique_bucket(),
            "S3_ACCESS_KEY_ID": self.access_key_id,
            "S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "S3_PATH_STYLE": "true",
        }


def unique_bucket(prefix: str = "test") -> str:
    """A bucket name no other test uses (S3 names: lowercase, digits, dashes, 3..63 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log_path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                raise RuntimeError(f"moto server exited with {process.returncode}:\n{log.read()[-4000:]}")
        try:
            if httpx.get(f"{url}/moto-api/", timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {url} within {STARTUP_TIMEOUT_S:.0f}s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 over HTTP on 127.0.0.1, for the whole test session."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # S3's real minimum part size, whatever the caller's environment says.
        "S3_UPLOAD_PART_MIN_SIZE": str(MIN_PART_SIZE),
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    }
    with tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False) as log:
        log_path = log.name
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_until_serving(url, process, log_path)
        yield S3Server(endpoint_url=url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        os.unlink(log_path)
