"""Structured JSON logs with the request id on every line, and the middleware that sets it."""

from __future__ import annotations

import logging
import re
import sys
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import tracing

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"
TRACESTATE_HEADER = b"tracestate"
# A propagated id is kept only when it looks like an id, so logs cannot be forged through it.
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stdout: timestamp, level, event, service, request id and fields."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("event"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Route the standard library (uvicorn, alembic, sqlalchemy) through the same JSON renderer.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Render tracebacks of stdlib records (uvicorn's "Exception in ASGI application").
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines are replaced by our own request log line, which carries the request id.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return value.decode()
    return None


def span_from(scope: Scope) -> tracing.Span:
    """This request's span: a child of the caller's ``traceparent``, or a new trace."""
    traceparent = tracestate = None
    for name, value in scope.get("headers", ()):
        if name == TRACEPARENT_HEADER:
            traceparent = value
        elif name == TRACESTATE_HEADER:
            tracestate = value
    return tracing.continue_trace(traceparent, tracestate)


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (or makes one), binds it to every log line, echoes it back;
    likewise starts this request's trace span from ``traceparent`` (``common.tracing``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope) or new_request_id()
        span = span_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["span"] = span
        id_tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        trace_token = tracing.enter(span)
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, encoded))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tracing.leave(trace_token)
            structlog.contextvars.reset_contextvars(**id_tokens)
