"""Abuse limits, stated once for every request and connection of both roles: per-address request
rates, sessions opened per address (Limits), and the connection ceiling, head size and timeouts
(ConnectionGuard). The connection (http.protocol) and the dispatcher (http.dispatch) apply them;
nothing else does.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final

from edge360.config.schema import Config
from edge360.core.errors import TooManyRequests
from edge360.core.kinds import PLAYLIST
from edge360.http.wire import Request
from edge360.node.counters import Counters
from edge360.security.ratelimit import TokenBucketLimiter, WindowCounter
from edge360.sessions.viewer import opens_counted_session

#: paths monitoring polls: never rate limited, so a throttled address cannot blind the dashboards
EXEMPT_PREFIXES: Final = ("/healthz", "/metrics", "/api/")
#: window of sessions.per_ip_per_minute
SESSION_WINDOW: Final = 60.0
#: answer to a connection over limits.max_connections; the peer learns to back off, not to retry
_BUSY: Final = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: 32\r\n\r\n"
                b'{"error": "service unavailable"}')


def is_exempt(path: str) -> bool:
    return path.startswith(EXEMPT_PREFIXES)


class Limits:
    """The request-level limiters of one worker, each bounded by limits.max_addresses."""

    def __init__(self, config: Config) -> None:
        lim = config.limits
        self.rate = TokenBucketLimiter(lim.rate_per_ip, lim.rate_burst, lim.max_addresses)
        self.rated = lim.rate_per_ip > 0
        self.session_opens = WindowCounter(config.sessions.per_ip_per_minute, SESSION_WINDOW,
                                           lim.max_addresses)

    def configure(self, config: Config) -> None:
        """Apply new rates and the session-open bound (SIGHUP); buckets and windows are kept."""
        lim = config.limits
        fresh = TokenBucketLimiter(lim.rate_per_ip, lim.rate_burst, lim.max_addresses)
        self.rate.rate, self.rate.burst = fresh.rate, fresh.burst
        self.rated = lim.rate_per_ip > 0
        self.session_opens.limit = config.sessions.per_ip_per_minute

    def check(self, request: Request, address: str) -> None:
        """Raise TooManyRequests (Retry-After rounded up) when `address` is over its request
        rate, or over the sessions it may open a minute (viewer.opens_counted_session)."""
        path, now = request.path, request.started
        if is_exempt(path):
            return
        if self.rated:
            wait = self.rate.check(address, now)
            if wait > 0:
                raise TooManyRequests(math.ceil(wait))
        if (self.session_opens.limit and request.kind == PLAYLIST
                and opens_counted_session(path, request.method, request.params(),
                                          request.fields, address)
                and not self.session_opens.allow(address, now)):
            raise TooManyRequests(math.ceil(SESSION_WINDOW))


class ConnectionGuard:
    """What every connection of one listener shares: the limits and the open-connection count."""

    def __init__(self, config: Config, counters: Counters,
                 clients: dict[Any, str] | None = None) -> None:
        self.counters = counters
        self.refused = 0
        #: transport -> client address a PROXY header named (security.proxyproto), while open
        self.clients: dict[Any, str] = {} if clients is None else clients
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Apply the limits a SIGHUP may change (config.live) to new and open connections."""
        lim = config.limits
        self.max_connections = lim.max_connections
        self.header_timeout = lim.header_timeout
        self.keepalive_timeout = lim.keepalive_timeout
        self.send_timeout = lim.send_timeout
        self.max_head = lim.max_header_bytes

    def closed(self, transport: Any) -> None:
        """An admitted connection closed: uncount it and forget its PROXY address."""
        self.counters.connections_open -= 1
        self.clients.pop(transport, None)

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection, or shed it (one canned 503, then close) over the ceiling."""
        if self.counters.connections_open >= self.max_connections:
            # shed before anything is spent on it: one canned answer, then close
            self.refused += 1
            self.clients.pop(transport, None)
            transport.write(_BUSY)
            transport.close()
            return False
        self.counters.connections_open += 1
        return True
