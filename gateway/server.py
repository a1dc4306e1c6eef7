"""How the gateway is served: uvicorn (uvloop + httptools) with one change to its HTTP protocol.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and the body in a second write. On this class of machine a socket write
that wakes the reader is the most expensive thing a proxied request does (measured: ~40% of the
gateway's CPU, most of it in those writes), so the protocol below corks the connection for the
rest of the event-loop turn: everything written in one turn leaves in one ``writev``. Nothing is
delayed past the current turn, so streaming and back-pressure behave as before.

    python -m gateway          # GATEWAY_HOST, GATEWAY_PORT, GATEWAY_WORKERS
    # or, equivalently:
    uvicorn gateway.app:create_app --factory --host 127.0.0.1 --port 8080 \
        --loop uvloop --http gateway.server:GatewayHttpProtocol \
        --no-access-log --no-server-header --no-proxy-headers
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """Wraps a transport: writes made during one loop turn are sent together at its end."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        pending = self._pending
        if not pending:
            self._loop.call_soon(self.flush)
        pending.append(data)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    # Called on every request by uvicorn: spelled out rather than left to __getattr__.
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# Bodies move in bigger steps than uvicorn's 64 KiB: each step costs a loop turn and a pause/resume
# of reading (two system calls); 1 GiB in 1 MiB steps is 1 024 turns instead of 16 384. Memory per
# connection stays bounded by these numbers.
REQUEST_BODY_HIGH_WATER = 1024 * 1024
WRITE_HIGH_WATER = 1024 * 1024


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a corked transport, with bigger body steps."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, hence the cast instead of a check.
        cast(asyncio.WriteTransport, transport).set_write_buffer_limits(high=WRITE_HIGH_WATER)
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        # uvicorn's on_body with REQUEST_BODY_HIGH_WATER instead of its 64 KiB.
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > REQUEST_BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()


def main() -> None:
    """``python -m gateway``: serve the gateway with the settings this module documents."""
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
        port=int(os.environ.get("GATEWAY_PORT", "8080")),
        workers=int(os.environ.get("GATEWAY_WORKERS", "1")),
        loop="uvloop",
        http="gateway.server:GatewayHttpProtocol",
        access_log=False,
        server_header=False,
        # The gateway is the edge: X-Forwarded-* from clients are dropped, never trusted.
        proxy_headers=False,
        timeout_keep_alive=30,
    )
