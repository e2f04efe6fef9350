"""A listening socket of the content plane: it makes a Connection per client (behind the PROXY
protocol gate when server.proxy_protocol is on, and TLS when a context is given), knows the open
ones, and drains them when the node stops.

Drain (docs/HTTP.md, "Drain"): the listener stops accepting, idle connections close at once, busy
ones after the answer in progress (which goes out with Connection: close); what is still open
after the drain timeout is cut.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from edge360.http.guard import ConnectionGuard
from edge360.http.outbox import Outbox
from edge360.http.protocol import Connection, Handler
from edge360.security.clientaddr import TrustedProxies
from edge360.security.proxyproto import ProxyGate, ProxyStats

#: pending connections the kernel queues for accept()
BACKLOG = 4096


class Listener:
    """See the module docstring. `proxy` is the trusted-proxies getter with PROXY protocol on."""

    def __init__(self, handler: Handler, guard: ConnectionGuard, *,
                 ssl_context: ssl.SSLContext | None = None,
                 proxy: Callable[[], TrustedProxies] | None = None) -> None:
        self.handler = handler
        self.guard = guard
        self.ssl_context = ssl_context
        self.proxy = proxy
        self.proxy_stats = ProxyStats()
        self.draining = False
        self.port = 0
        self._live: set[Connection] = set()  # bounded by limits.max_connections
        self._empty: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._outbox: Outbox | None = None  # made in the loop, by the first connection

    # -- the live set (http.protocol.Live)

    def add(self, conn: Connection) -> None:
        self._live.add(conn)

    def discard(self, conn: Connection) -> None:
        self._live.discard(conn)
        if not self._live and self._empty is not None:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._live)

    # -- connections

    def _connection(self) -> asyncio.Protocol:
        if self._outbox is None:
            self._outbox = Outbox(asyncio.get_running_loop())
        # a Connection is an asyncio.Protocol by its methods, not by its base (http.protocol)
        return cast(asyncio.Protocol, Connection(self.handler, self.guard, self, self._outbox,
                                                 tls=self.ssl_context is not None))

    def protocol(self) -> asyncio.Protocol:
        """A new connection's protocol (the PROXY gate first when configured)."""
        if self.proxy is not None:
            return ProxyGate(self.proxy, self.guard.header_timeout, self.guard.clients,
                             self.proxy_stats, self._connection)
        return self._connection()

    async def start(self, host: str | None = None, port: int = 0, *,
                    sock: socket.socket | None = None, reuse_port: bool = False) -> int:
        """Listen on host:port, or on `sock` (a socket bound and listening already); returns the
        bound port."""
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self.ssl_context is not None:
            # a TLS handshake is part of the head: it gets the same time to finish
            extra["ssl_handshake_timeout"] = self.guard.header_timeout
        if sock is not None:
            self._server = await loop.create_server(self.protocol, sock=sock,
                                                    ssl=self.ssl_context, backlog=BACKLOG,
                                                    **extra)
        else:
            self._server = await loop.create_server(
                self.protocol, host, port, ssl=self.ssl_context, backlog=BACKLOG,
                reuse_port=reuse_port or None, **extra)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def close(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._live):
            conn.drain()

    async def wait_drained(self, seconds: float) -> None:
        """Wait up to `seconds` for the answers in flight, then cut what is left."""
        if self._live:
            self._empty = asyncio.Event()
            try:
                await asyncio.wait_for(self._empty.wait(), seconds)
            except TimeoutError:
                pass
        for conn in list(self._live):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
