"""The PROXY protocol listener side (server.proxy_protocol): every connection must begin with a
PROXY v1 or v2 header (HAProxy's proxy-protocol.txt), and only from server.trusted_proxies.

`ProxyGate` sits in front of a connection's real protocol until the header is complete: a peer
outside trusted_proxies is closed at once (before a byte is read: the header is refused, not
ignored, so a misrouted client cannot slip past its balancer's limits), and so is a header that
does not parse or does not end within limits.header_timeout. Then the real protocol is installed
on the transport with `set_protocol` and gets the bytes after the header. The source address the
header names is recorded in `clients` (transport -> address) for the connection's lifetime; the
content plane reads it there as the TCP peer (rate limits, session fallback,
access log). LOCAL and UNKNOWN headers (balancer health checks) keep the real peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from edge360.core.errors import BadRequest
from edge360.security.clientaddr import V2_MAX_LENGTH, TrustedProxies, parse_proxy_header

log = logging.getLogger("edge360")

#: bytes kept at most while a header is incomplete (the longest v2 header the parser accepts)
MAX_HEADER = 16 + V2_MAX_LENGTH


class ProxyStats:
    """What the gates of one listener refused."""

    def __init__(self) -> None:
        self.untrusted = 0
        self.malformed = 0


class ProxyGate(asyncio.Protocol):
    """One connection until its PROXY header is read; then `make_inner()` takes over."""

    def __init__(self, trusted: Callable[[], TrustedProxies], header_timeout: float,
                 clients: dict[Any, str], stats: ProxyStats,
                 make_inner: Callable[[], asyncio.Protocol]) -> None:
        self._trusted = trusted
        self._timeout = header_timeout
        self._clients = clients
        self._stats = stats
        self._make_inner = make_inner
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else ""
        if not self._trusted().contains(address):
            self._stats.untrusted += 1
            log.debug("PROXY header refused from untrusted peer %s", address)
            transport.close()
            return
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._refuse)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._buf += data
        try:
            parsed = parse_proxy_header(bytes(self._buf[:MAX_HEADER]))
        except BadRequest:
            self._refuse()
            return
        if parsed is None:
            if len(self._buf) >= MAX_HEADER:
                self._refuse()
            return
        used, source = parsed
        self._cancel()
        self._transport = None
        rest = bytes(self._buf[used:])
        self._buf.clear()
        if source is not None:
            self._clients[transport] = source
        inner = self._make_inner()
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if rest and not transport.is_closing():
            inner.data_received(rest)
        if transport.is_closing():  # e.g. shed over limits.max_connections
            self._clients.pop(transport, None)

    def eof_received(self) -> bool:
        self._refuse()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._transport = None

    def _refuse(self) -> None:
        """A missing, malformed or late header: close without a word (it is not HTTP yet)."""
        self._cancel()
        if self._transport is not None:
            self._stats.malformed += 1
            self._transport.close()
            self._transport = None

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
