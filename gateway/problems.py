"""problem+json answers given by the gateway itself (shared renderer: common.errors.problem)."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from common.errors import problem
from gateway.metrics import count_rejection


async def send_problem(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> None:
    """Answer at the edge with an RFC 9457 problem; the upstream never sees the request."""
    count_rejection(code)
    response = problem(status, code, detail, instance=scope.get("path"), headers=headers, **extra)
    await response(scope, receive, send)
