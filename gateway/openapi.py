"""The combined OpenAPI document of every service, as clients see it through the gateway.

Each upstream's ``/openapi.json`` is fetched, its public paths get the public prefix (the
``/api/v1`` the gateway strips), internal and health paths are dropped, and schema names that
two services use for different shapes are qualified with the service name. The result is cached;
a service that cannot be reached keeps its last good copy (or is listed as unavailable).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

import httpx
import structlog

from gateway.routes import RouteTable, check_path
from gateway.settings import API_PREFIX
from gateway.upstreams import Upstream

log = structlog.get_logger("gateway.openapi")

_HIDDEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
)
_REF_PREFIX = "#/components/schemas/"


def _public_path(path: str, table: RouteTable, upstream: str) -> str | None:
    """The public path that reaches ``path`` on ``upstream``, or None when it is not routed there."""
    if path in _HIDDEN_PATHS:
        return None
    for candidate in (API_PREFIX + path, path):
        try:
            check_path(candidate)
        except Exception:
            return None
        route = table.route_for(candidate.split("{", 1)[0].rstrip("/") or candidate)
        if route is not None and route.upstream == upstream:
            return candidate
    return None


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                name = value[len(_REF_PREFIX) :]
                out[key] = _REF_PREFIX + renames.get(name, name)
            else:
                out[key] = _rename_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(item, renames) for item in node]
    return node


def merge_documents(
    documents: dict[str, dict[str, Any]], table: RouteTable, *, unavailable: list[str]
) -> dict[str, Any]:
    """One OpenAPI 3.1 document from the services' own (``documents`` by upstream name)."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for service, document in sorted(documents.items()):
        document = copy.deepcopy(document)
        own_schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        renames: dict[str, str] = {}
        for name, schema in own_schemas.items():
            if name in schemas and json.dumps(schemas[name], sort_keys=True) != json.dumps(
                schema, sort_keys=True
            ):
                renames[name] = f"{service}_{name}"
        document = _rename_refs(document, renames)
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(renames.get(name, name), schema)
        for path, item in document.get("paths", {}).items():
            public = _public_path(path, table, service)
            if public is None:
                continue
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation.setdefault("tags", [service])
                    if "operationId" in operation:
                        operation["operationId"] = f"{service}_{operation['operationId']}"
            paths[public] = item
    info_description = "Every Streamify service's public API, as served through the gateway."
    if unavailable:
        info_description += f" Not available right now: {', '.join(sorted(unavailable))}."
    return {
        "openapi": "3.1.0",
        "info": {"title": "Streamify API", "version": "1.0.0", "description": info_description},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{}, {"bearer": []}],
    }


class CombinedOpenAPI:
    def __init__(
        self, upstreams: dict[str, Upstream], table: RouteTable, *, cache_s: float, timeout_s: float
    ) -> None:
        self._upstreams = upstreams
        self._table = table
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._documents: dict[str, dict[str, Any]] = {}
        self._merged: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def document(self, client: httpx.AsyncClient) -> dict[str, Any]:
        if self._merged is not None and time.monotonic() - self._fetched_at < self._cache_s:
            return self._merged
        async with self._lock:
            if self._merged is not None and time.monotonic() - self._fetched_at < self._cache_s:
                return self._merged
            results = await asyncio.gather(*(self._fetch(client, up) for up in self._upstreams.values()))
            unavailable = []
            for upstream, document in zip(self._upstreams.values(), results, strict=True):
                if document is not None:
                    self._documents[upstream.name] = document
                elif upstream.name not in self._documents:
                    unavailable.append(upstream.name)
            self._merged = merge_documents(self._documents, self._table, unavailable=unavailable)
            # Retry sooner while a service is missing.
            self._fetched_at = time.monotonic() - (self._cache_s * 0.8 if unavailable else 0)
            return self._merged

    async def _fetch(self, client: httpx.AsyncClient, upstream: Upstream) -> dict[str, Any] | None:
        for instance in upstream.candidates():
            try:
                response = await client.get(f"{instance.url}/openapi.json", timeout=self._timeout_s)
                if response.status_code == 200:
                    document: dict[str, Any] = response.json()
                    return document
            except (httpx.HTTPError, ValueError) as exc:
                log.info(
                    "openapi_fetch_failed", upstream=upstream.name, instance=instance.url, error=repr(exc)
                )
        return None
