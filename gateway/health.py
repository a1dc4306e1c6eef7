"""/readyz for the gateway: every upstream must have at least one instance whose /readyz says 200."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from gateway.upstreams import Instance, Upstream


async def _instance_ready(client: httpx.AsyncClient, instance: Instance, timeout_s: float) -> str:
    try:
        response = await client.get(f"{instance.url}/readyz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ready" if response.status_code == 200 else f"not_ready: {response.status_code}"


async def _redis_ready(redis: Redis | None, timeout_s: float) -> str:
    if redis is None:
        return "not_started"
    try:
        await asyncio.wait_for(redis.ping(), timeout_s)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ready"


async def readiness(
    upstreams: dict[str, Upstream],
    client: httpx.AsyncClient,
    redis: Redis | None,
    *,
    timeout_s: float,
) -> tuple[bool, dict[str, Any]]:
    """Ask every instance at once; an instance that answers ready is put back in rotation."""
    pairs = [(upstream, instance) for upstream in upstreams.values() for instance in upstream.instances]
    answers, redis_state = await asyncio.gather(
        asyncio.gather(*(_instance_ready(client, instance, timeout_s) for _, instance in pairs)),
        _redis_ready(redis, timeout_s),
    )
    report: dict[str, Any] = {}
    for (upstream, instance), answer in zip(pairs, answers, strict=True):
        entry = report.setdefault(
            upstream.name, {"ready": False, "circuit": upstream.breaker.state.name.lower(), "instances": {}}
        )
        entry["instances"][instance.url] = answer
        if answer == "ready":
            entry["ready"] = True
            upstream.mark_ok(instance)
    ready = all(entry["ready"] for entry in report.values()) and redis_state == "ready"
    return ready, {"status": "ready" if ready else "not_ready", "upstreams": report, "redis": redis_state}
