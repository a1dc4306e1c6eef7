"""W3C Trace Context (``traceparent``) across the gateway, the services, their calls and jobs.

Every HTTP request handled by a Streamify process is one *span*: it keeps the caller's trace id
(or starts a trace when the caller sent none or an invalid header), gets a new span id, and
remembers the caller's span as its parent. The current span lives in a context variable and its
ids are bound into every log line (``trace_id``, ``span_id``), beside ``request_id``. Outgoing
calls (``common.internal.ServiceClient``, streaming's charge poster) and enqueued jobs carry
``traceparent`` naming the current span as their parent, so one upload request and the transcode job
it caused share a trace id in the logs. ``tracestate`` is passed along unchanged.

The header format is small and fixed (https://www.w3.org/TR/trace-context/), so it is parsed
here with one strict regular expression rather than pulling in OpenTelemetry's SDK; a deployment
that exports spans can add OpenTelemetry instrumentation, which speaks the same header.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

import structlog

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version-trace_id-parent_id-flags; version ff is invalid, all-zero ids are invalid. A future
# version may append fields after the flags ("-..."), which version 00 must not.
_HEADER = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[0-9a-zA-Z._-]*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_TRACESTATE = 512


@dataclass(frozen=True, slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None = None
    flags: str = "01"
    tracestate: str | None = None

    @property
    def traceparent(self) -> str:
        """The header that makes this span the parent of the next hop."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self) -> dict[str, str]:
        """Headers for an outgoing call made within this span."""
        headers = {TRACEPARENT: self.traceparent}
        if self.tracestate:
            headers[TRACESTATE] = self.tracestate
        return headers


def new_span_id() -> str:
    return os.urandom(8).hex()


def new_trace_id() -> str:
    return os.urandom(16).hex()


def parse_traceparent(value: str | bytes | None) -> tuple[str, str, str] | None:
    """``(trace_id, parent_span_id, flags)`` of a valid header, else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _HEADER.match(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def continue_trace(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> Span:
    """This hop's span: a child of the caller's span, or the root of a new trace."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return Span(new_trace_id(), new_span_id())
    trace_id, parent_id, flags = parsed
    if isinstance(tracestate, bytes):
        tracestate = tracestate.decode("ascii", "replace")
    if tracestate is not None and (len(tracestate) > _MAX_TRACESTATE or not tracestate.isprintable()):
        tracestate = None
    return Span(trace_id, new_span_id(), parent_id, flags, tracestate)


_current: ContextVar[Span | None] = ContextVar("streamify_span", default=None)


def current_span() -> Span | None:
    return _current.get()


Entered = tuple[Token["Span | None"], Mapping[str, Token[Any]]]


def enter(span: Span) -> Entered:
    """Make ``span`` current and put its ids on every log line; returns a token for ``leave``,
    which restores what was current before (an in-process call's span ends without erasing its
    caller's)."""
    log_tokens = structlog.contextvars.bind_contextvars(trace_id=span.trace_id, span_id=span.span_id)
    return _current.set(span), log_tokens


def leave(token: Entered) -> None:
    span_token, log_tokens = token
    _current.reset(span_token)
    structlog.contextvars.reset_contextvars(**log_tokens)


def outgoing_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for a call or job started now, naming the current span
    as its parent (no separate client span: nothing records one), or nothing outside any trace."""
    span = _current.get()
    return span.headers() if span is not None else {}
