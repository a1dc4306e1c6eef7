"""A test-only upstream (the edge of the gateway tests, not one of our services).

Pure ASGI, run as a real uvicorn process. It answers any path; the query string picks what it does:

- default: echo JSON {service, method, path, query, headers} and log one JSON line (with the
  request id, through the same logging setup the services use)
- ``?op=bytes&n=N``: stream N zero bytes in 1 MiB chunks
- ``?op=sink``: read and discard the request body, answer {"received": N}
- ``?op=slow&s=S``: answer after S seconds
- ``?op=early&status=C``: answer C at once without reading the request body
- ``/readyz``: 200 (or 503 when UPSTREAM_NOT_READY is set); ``/openapi.json``: a tiny document;
  ``/.well-known/jwks.json``: the file named by UPSTREAM_JWKS_FILE, when set
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs

import structlog
from starlette.types import Receive, Scope, Send

from common.logging import RequestIdMiddleware, configure_logging

NAME = os.environ.get("UPSTREAM_NAME", "upstream")
CHUNK = b"\0" * (1024 * 1024)
configure_logging(NAME, "INFO")
log = structlog.get_logger(NAME)


async def _json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _openapi() -> dict[str, object]:
    schema = {"type": "object", "properties": {"service": {"type": "string", "const": NAME}}}
    ok = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Echo"}}},
        }
    }
    paths = {
        f"/{NAME}-things/{{thing_id}}": {"get": {"operationId": "get_thing", "responses": ok}},
        f"/internal/{NAME}": {"get": {"operationId": "internal_thing", "responses": ok}},
        "/healthz": {"get": {"operationId": "healthz", "responses": ok}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": NAME, "version": "1"},
        "paths": paths,
        "components": {"schemas": {"Echo": schema}},
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/readyz":
        ready = not os.environ.get("UPSTREAM_NOT_READY")
        await _json(send, 200 if ready else 503, {"status": "ready" if ready else "not_ready"})
        return
    if path == "/openapi.json":
        await _json(send, 200, _openapi())
        return
    jwks_file = os.environ.get("UPSTREAM_JWKS_FILE")
    if jwks_file and path == "/.well-known/jwks.json":
        with open(jwks_file) as handle:  # noqa: ASYNC230 - a tiny test file
            await _json(send, 200, json.load(handle))
        return
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    op = query.get("op", "echo")
    if op == "bytes":
        remaining = int(query["n"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(remaining).encode()),
                ],
            }
        )
        while remaining > 0:
            chunk = CHUNK if remaining >= len(CHUNK) else CHUNK[:remaining]
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        return
    if op == "early":
        # Answer without reading the body (as a service refusing an upload does).
        await _json(send, int(query.get("status", "413")), {"service": NAME, "early": True})
        return
    received = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    if op == "slow":
        await asyncio.sleep(float(query.get("s", "5")))
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    log.info("echo", path=path, method=scope["method"])
    await _json(
        send,
        int(query.get("status", "200")),
        {
            "service": NAME,
            "method": scope["method"],
            "path": path,
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "received": received,
        },
    )


application = RequestIdMiddleware(app)
