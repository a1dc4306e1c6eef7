"""The proxy: forwards one routed request to an upstream instance and streams the answer back.

Request and response bodies are streamed chunk by chunk with back-pressure both ways (the
client's socket, the upstream's socket), so memory stays flat whatever the body size. Client
headers that claim an identity or a forwarding chain are dropped; the verified identity, the
peer address and the request id are added. Failures map to problem+json: unreachable -> 502,
no instance / breaker open -> 503, no answer within the route class's deadline -> 504.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from starlette.types import Message, Receive, Scope, Send

from common.tokens import Identity
from gateway.accesslog import AccessLog
from gateway.http1 import ConnectFailed, Connection, UpstreamBroken, UpstreamError, UpstreamTimeout
from gateway.metrics import UpstreamMetrics
from gateway.problems import send_problem
from gateway.routes import Match
from gateway.upstreams import Instance, Upstream

log = structlog.get_logger("gateway.proxy")

# Hop-by-hop headers (RFC 9110 §7.6.1) and ones the gateway sets itself.
_REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"content-length",
        b"host",
        # Identity and forwarding claims are the gateway's to make, never the client's.
        b"x-user-id",
        b"x-user-role",
        b"x-service-token",
        b"x-real-ip",
        b"x-client-ip",
        b"forwarded",
        b"x-request-id",
        # Replaced by the gateway's own span (the upstream's parent), see common.tracing.
        b"traceparent",
    }
)
_REQUEST_DROP_PREFIXES = (b"x-authenticated-", b"x-streamify-", b"x-forwarded-", b"x-user-", b"x-original-")
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"server",
        b"date",
    }
)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
MAX_CONNECT_ATTEMPTS = 3


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


def build_request_head(
    scope: Scope,
    match: Match,
    instance: Instance,
    identity: Identity | None,
    request_id: str,
    traceparent: str = "",
) -> tuple[bytes, int | None, bool]:
    """The request line and headers for the upstream; plus the body's length / chunked-ness."""
    parts: list[bytes] = [scope["method"].encode("ascii"), b" ", match.target]
    query = scope.get("query_string")
    if query:
        parts += (b"?", query)
    parts.append(b" HTTP/1.1\r\n")
    host = b""
    content_length: int | None = None
    chunked = False
    named_hop_headers: set[bytes] = set()
    kept: list[tuple[bytes, bytes]] = []
    for name, value in scope["headers"]:
        if name in _REQUEST_DROP:
            if name == b"host":
                host = value
            elif name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                named_hop_headers.update(t.strip().lower() for t in value.split(b","))
            continue
        if name.startswith(_REQUEST_DROP_PREFIXES):
            continue
        kept.append((name, value))
    if named_hop_headers:
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        kept = [(name, value) for name, value in kept if name not in named_hop_headers]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    client = scope.get("client")
    parts += (
        b"host: ",
        host or instance.netloc,
        b"\r\nx-forwarded-for: ",
        (client[0] if client else "unknown").encode("ascii", "replace"),
        b"\r\nx-forwarded-proto: ",
        scope.get("scheme", "http").encode("ascii"),
        b"\r\nx-request-id: ",
        request_id.encode("ascii"),
        b"\r\n",
    )
    if traceparent:
        parts += (b"traceparent: ", traceparent.encode("ascii"), b"\r\n")
    if host:
        parts += (b"x-forwarded-host: ", host, b"\r\n")
    if identity is not None:
        parts += (
            b"x-streamify-user-id: ",
            identity.user_id.encode("utf-8"),
            b"\r\nx-streamify-user-role: ",
            identity.role.encode("utf-8"),
            b"\r\n",
        )
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
        content_length = None
    elif content_length is not None:
        parts += (b"content-length: ", str(content_length).encode("ascii"), b"\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts), content_length, chunked


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in _RESPONSE_DROP]


class Proxy:
    """The innermost ASGI app of the proxied path (expects ``scope["gateway.match"]``)."""

    def __init__(self, upstreams: dict[str, Upstream], *, access_log: AccessLog | None = None) -> None:
        self.upstreams = upstreams
        self.metrics = {name: UpstreamMetrics(name) for name in upstreams}
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: Match = scope["gateway.match"]
        upstream = self.upstreams[match.route.upstream]
        metrics = self.metrics[upstream.name]
        breaker = upstream.breaker
        if not breaker.allow():
            metrics.count("circuit_open")
            await send_problem(
                scope,
                receive,
                send,
                503,
                "upstream_unavailable",
                f"The {upstream.name} service is unavailable; try again shortly.",
                headers={"Retry-After": str(breaker.retry_after_s())},
            )
            return
        state = scope.get("state") or {}
        request_id: str = state.get("request_id", "")
        span = state.get("span")
        trace_id = span.trace_id if span is not None else None
        identity: Identity | None = scope.get("gateway.identity")
        timeout_s = match.route_class.timeout_s
        started = time.perf_counter()
        try:
            conn, instance = await self._connect(
                upstream, scope, match, identity, request_id, receive, timeout_s
            )
        except ConnectFailed as exc:
            breaker.record_failure()
            metrics.count("unreachable")
            log.warning("upstream_unreachable", upstream=upstream.name, error=str(exc))
            await send_problem(
                scope,
                receive,
                send,
                502,
                "upstream_unreachable",
                f"The {upstream.name} service cannot be reached.",
            )
            return
        except UpstreamTimeout:
            breaker.record_failure()
            metrics.count("timeout")
            log.warning("upstream_timeout", upstream=upstream.name, timeout_s=timeout_s)
            await send_problem(
                scope,
                receive,
                send,
                504,
                "upstream_timeout",
                f"The {upstream.name} service did not answer within {timeout_s:g} s.",
            )
            return
        except UpstreamBroken as exc:
            breaker.record_failure()
            metrics.count("broken")
            log.warning("upstream_broken", upstream=upstream.name, error=str(exc))
            await send_problem(
                scope,
                receive,
                send,
                502,
                "bad_gateway",
                f"The {upstream.name} service closed the connection.",
            )
            return
        except _ClientGone:
            breaker.record_neutral()
            return
        except BaseException:
            breaker.record_neutral()
            raise
        breaker.record_success()
        upstream.mark_ok(instance)
        metrics.latency.observe(time.perf_counter() - started)
        metrics.count(conn.status)
        await self._respond(scope, receive, send, conn, instance, timeout_s)
        if self.access_log is not None:
            self.access_log.write(
                "proxied",
                request_id,
                trace_id=trace_id,
                method=scope["method"],
                route=match.route.template,
                upstream=upstream.name,
                status=conn.status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def _connect(
        self,
        upstream: Upstream,
        scope: Scope,
        match: Match,
        identity: Identity | None,
        request_id: str,
        receive: Receive,
        timeout_s: float,
    ) -> tuple[Connection, Instance]:
        """Send the request to an instance and wait for its response head.

        Instances that refuse the connection are ejected and the next is tried (nothing has
        been sent yet, so any request may move). A pooled connection that turns out to be
        closed is retried once on a fresh one when the request has no body and is idempotent.
        """
        last_error: ConnectFailed | None = None
        for attempt, instance in enumerate(upstream.candidates()):
            if attempt >= MAX_CONNECT_ATTEMPTS:
                break
            try:
                conn = await instance.pool.acquire()
            except ConnectFailed as exc:
                upstream.mark_failed(instance)
                last_error = exc
                continue
            span = (scope.get("state") or {}).get("span")
            traceparent = span.traceparent if span is not None else ""
            head, content_length, chunked = build_request_head(
                scope, match, instance, identity, request_id, traceparent
            )
            has_body = chunked or bool(content_length)
            try:
                await self._exchange(conn, head, scope, receive, has_body, chunked, timeout_s)
            except UpstreamBroken:
                conn.abort()
                if not (
                    conn.reused and not conn.received_any and not has_body and scope["method"] in _IDEMPOTENT
                ):
                    upstream.mark_failed(instance)
                    raise
                # A stale keep-alive connection: the upstream closed it as we sent. Try once more.
                conn = await instance.pool.acquire(fresh=True)
                try:
                    await self._exchange(conn, head, scope, receive, False, False, timeout_s)
                except BaseException:
                    conn.abort()
                    raise
            except BaseException:
                conn.abort()
                raise
            return conn, instance
        assert last_error is not None
        raise last_error

    async def _exchange(
        self,
        conn: Connection,
        head: bytes,
        scope: Scope,
        receive: Receive,
        has_body: bool,
        chunked: bool,
        timeout_s: float,
    ) -> None:
        conn.start(head, head_only=scope["method"] == "HEAD", defer=has_body)
        if has_body:
            await self._forward_body(conn, receive, chunked, timeout_s)
            conn.flush()
        await conn.read_head(timeout_s)

    async def _forward_body(
        self, conn: Connection, receive: Receive, chunked: bool, timeout_s: float
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            body = message.get("body", b"")
            if body:
                if chunked:
                    conn.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
                else:
                    conn.write(body)
                if conn.write_paused:
                    await conn.drain(timeout_s)
            if conn.head_received or conn.closed:
                # The upstream answered (or gave up) before taking the whole body.
                return
            if not message.get("more_body", False):
                break
        if chunked:
            conn.write(b"0\r\n\r\n")

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        conn: Connection,
        instance: Instance,
        timeout_s: float,
    ) -> None:
        await send(
            {"type": "http.response.start", "status": conn.status, "headers": response_headers(conn.headers)}
        )
        if conn.complete:
            await send({"type": "http.response.body", "body": conn.take_buffered()})
            instance.pool.release(conn)
            return
        finished = False
        client_gone = False
        watcher: asyncio.Task[None] | None = None

        async def watch_disconnect() -> None:
            # A client that goes away mid-download must not keep the upstream streaming.
            nonlocal client_gone
            try:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        if not finished:
                            client_gone = True
                            conn.abort()
                        return
            except Exception:
                return

        try:
            waits = 0
            while True:
                chunk = conn.take_buffered()
                if not chunk:
                    if conn.complete:
                        break
                    waits += 1
                    if waits == 2 and watcher is None:
                        # A long stream (not just a head and body in separate packets).
                        watcher = asyncio.create_task(watch_disconnect())
                    chunk = await conn.read_body(timeout_s)
                    if not chunk:
                        break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": b""})
        except UpstreamError as exc:
            # The head is out; all that can be done is to cut the client's connection.
            if not client_gone:
                log.warning("upstream_body_failed", upstream=instance.url, error=str(exc))
            conn.abort()
            return
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        instance.pool.release(conn)
