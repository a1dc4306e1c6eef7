"""Gateway test fixtures: real upstream processes, real Redis, the gateway in-process or as a process.

The upstreams here are the test-only echo app (tests/gateway/upstream_app.py), one uvicorn process
per service name, so a test sees exactly which upstream a request reached and what it received.
The gateway runs in-process over ASGI (its proxy still talks TCP to the upstream processes), or
as a real uvicorn process where the server matters (streaming memory, raw request lines).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.app import create_app
from gateway.settings import GatewaySettings
from streamify.embedded import free_port
from tests.conftest import ROOT

SERVICES = ("auth", "catalog", "streaming", "billing", "analytics")
ISSUER = "streamify-auth"
AUDIENCE = "streamify"


class ServerProcess:
    """A uvicorn child process with its stdout (JSON logs) in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/healthz", timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_path.read_text()[-4000:]}")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def uvicorn_args(target: str, port: int, *, factory: bool, http: str = "httptools") -> list[str]:
    args = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--loop", "uvloop", "--http", http, "--no-access-log", "--no-server-header"]
    return [*args, "--factory"] if factory else args


def start_echo(name: str, log_dir: Path, *, port: int | None = None, **env: str) -> ServerProcess:
    port = port or free_port()
    process = ServerProcess(
        name,
        uvicorn_args("tests.gateway.upstream_app:application", port, factory=False),
        {**os.environ, "UPSTREAM_NAME": name, **env},
        log_dir,
        port,
    )
    return process


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-logs")


@pytest.fixture(scope="session")
def echoes(log_dir: Path) -> Iterator[dict[str, ServerProcess]]:
    """One echo upstream per service, plus a second auth instance ("auth2")."""
    processes = {name: start_echo(name, log_dir) for name in (*SERVICES, "auth2")}
    try:
        for process in processes.values():
            process.wait_ready("/readyz")
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def unused_url() -> str:
    """An address where nothing listens (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class Signer:
    """Our own RS256 key, published through an injected JWKS loader."""

    key: rsa.RSAPrivateKey
    kid: str

    @property
    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def loader(self) -> Callable[[], Any]:
        async def load() -> dict[str, Any]:
            return self.jwks

        return load

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "sub": str(uuid.uuid4()),
            "role": "viewer",
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "typ": "access",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), f"test-{uuid.uuid4().hex[:8]}"
    )


def random_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="session")
def settings_for(
    echoes: dict[str, ServerProcess], redis_url: str, service_env: dict[str, str]
) -> Callable[..., GatewaySettings]:
    """GatewaySettings pointing every service at its echo upstream; keyword arguments override."""

    def build(**overrides: Any) -> GatewaySettings:
        upstreams = {name: [echoes[name].url] for name in SERVICES}
        upstreams["auth"] = [echoes["auth"].url, echoes["auth2"].url]
        values: dict[str, Any] = {
            "upstreams": upstreams,
            "redis_url": redis_url,
            "log_level": "WARNING",
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        }
        upstreams.update(overrides.pop("upstreams", {}))
        values.update(overrides)
        return GatewaySettings(**values)

    return build


@asynccontextmanager
async def open_gateway(
    settings: GatewaySettings,
    *,
    signer: Signer | None = None,
    client_ip: str | None = None,
    base_url: str = "http://gateway.test",
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process (lifespan running), with an httpx client arriving from ``client_ip``."""
    app = create_app(settings, jwks_loader=signer.loader() if signer else None)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(client_ip or random_ip(), 40_000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client


@pytest.fixture
async def gateway(
    settings_for: Callable[..., GatewaySettings], signer: Signer
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with default policies in front of the echo upstreams."""
    async with open_gateway(settings_for(), signer=signer) as client:
        yield client


def echo_count(process: ServerProcess) -> int:
    """How many echo requests the upstream process has served (from its JSON log)."""
    return sum(1 for line in process.log_lines() if line.get("event") == "echo")


def raw_request(port: int, request: bytes, *, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation); (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


@pytest.fixture(scope="session")
def gateway_process(
    echoes: dict[str, ServerProcess], log_dir: Path, redis_url: str, base_env: dict[str, str], signer: Signer
) -> Iterator[ServerProcess]:
    """The gateway as a real uvicorn process (the production protocol class) in front of the echoes."""
    jwks_path = log_dir / "jwks.json"
    jwks_path.write_text(json.dumps(signer.jwks))
    jwks_server = start_echo("jwks", log_dir, UPSTREAM_JWKS_FILE=str(jwks_path))
    port = free_port()
    upstreams = {name: [echoes[name].url] for name in SERVICES}
    env = {
        **os.environ,
        **base_env,
        "LOG_LEVEL": "INFO",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWKS_URL": f"{jwks_server.url}/.well-known/jwks.json",
        "GATEWAY_UPSTREAMS": json.dumps(upstreams),
    }
    process = ServerProcess(
        "gateway",
        [
            *uvicorn_args(
                "gateway.app:create_app", port, factory=True, http="gateway.server:GatewayHttpProtocol"
            ),
            "--no-proxy-headers",
        ],
        env,
        log_dir,
        port,
    )
    try:
        jwks_server.wait_ready("/readyz")
        process.wait_ready("/healthz")
        yield process
    finally:
        process.stop()
        jwks_server.stop()
