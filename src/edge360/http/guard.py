"""Abuse limits of both roles: per-address request rates, sessions opened per address, and the
per-connection guards aiohttp has no option for (connection ceiling, request-head timeout, send
timeout), plus the listener that installs them.

The connection guards live in `GuardedProtocol`, a thin asyncio.Protocol in front of aiohttp's own
RequestHandler: it sees every connection open and close (so `connections_open` is exact), every
byte that arrives (so a head that never ends can be timed) and the socket's send progress (so a
reader that stopped reading can be cut off). Everything else is forwarded untouched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge360.config.schema import Config
from edge360.core.errors import TooManyRequests
from edge360.http.sendprogress import check_send_progress
from edge360.node.counters import Counters
from edge360.node.state import NODE, NodeState
from edge360.security.proxyproto import ProxyGate, ProxyStats
from edge360.security.ratelimit import TokenBucketLimiter, WindowCounter
from edge360.sessions.viewer import opens_counted_session

#: paths monitoring polls: never rate limited, so a throttled address cannot blind the dashboards
EXEMPT_PREFIXES = ("/healthz", "/metrics", "/api/")
#: window of sessions.per_ip_per_minute
SESSION_WINDOW = 60.0
#: answer to a connection over limits.max_connections; the peer learns to back off, not to retry
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
         b"Content-Type: application/json\r\nContent-Length: 32\r\n\r\n"
         b'{"error": "service unavailable"}')


def is_exempt(path: str) -> bool:
    return path.startswith(EXEMPT_PREFIXES)


class Limits:
    """The request-level limiters of one worker, each bounded by limits.max_addresses."""

    def __init__(self, config: Config) -> None:
        lim = config.limits
        self.rate = TokenBucketLimiter(lim.rate_per_ip, lim.rate_burst, lim.max_addresses)
        self.session_opens = WindowCounter(config.sessions.per_ip_per_minute, SESSION_WINDOW,
                                           lim.max_addresses)

    def configure(self, config: Config) -> None:
        """Apply new rates and the session-open bound (SIGHUP); buckets and windows are kept."""
        lim = config.limits
        fresh = TokenBucketLimiter(lim.rate_per_ip, lim.rate_burst, lim.max_addresses)
        self.rate.rate, self.rate.burst = fresh.rate, fresh.burst
        self.session_opens.limit = config.sessions.per_ip_per_minute

    def check(self, request: web.Request, address: str, now: float) -> None:
        """Raise TooManyRequests (Retry-After rounded up) when `address` is over its request
        rate, or over the sessions it may open a minute (viewerrules.opens_counted_session)."""
        if is_exempt(request.path):
            return
        wait = self.rate.check(address, now)
        if wait > 0:
            raise TooManyRequests(math.ceil(wait))
        if (self.session_opens.limit
                and opens_counted_session(request.path, request.method, request.query,
                                          request.headers, address)
                and not self.session_opens.allow(address, now)):
            raise TooManyRequests(math.ceil(SESSION_WINDOW))


LIMITS = web.AppKey("edge360_limits", Limits)


class _QuietParserErrors(logging.Filter):
    """aiohttp logs every request its parser refuses at ERROR with a traceback, quoting the bad
    header line: a flood of garbage would flood the log, and the quoted line may hold an
    Authorization value or a token. The client already got its 400; keep one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not record.name or not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.msg, record.args = "refused a malformed request (%s)", (exc.code,)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_QUIET = _QuietParserErrors()


def install(app: web.Application) -> None:
    """Attach the request limiters to `app` (the middleware finds them there) and quiet
    aiohttp's parser-error log."""
    app[LIMITS] = Limits(app[NODE].config)
    server_log = logging.getLogger("aiohttp.server")
    if _QUIET not in server_log.filters:
        server_log.addFilter(_QUIET)


# --------------------------------------------------------------------------- connections


class ConnectionGuard:
    """What every connection of one listener shares: the limits and the open-connection count."""

    def __init__(self, config: Config, counters: Counters,
                 clients: dict[Any, str] | None = None) -> None:
        lim = config.limits
        self.max_connections = lim.max_connections
        self.header_timeout = lim.header_timeout
        self.send_timeout = lim.send_timeout
        # a head larger than this is refused by aiohttp's parser anyway; keep no more of it
        self.head_cap = 2 * lim.max_header_bytes + 4096
        self.counters = counters
        self.refused = 0
        #: transport -> client address a PROXY header named (proxyproto), while it is open
        self.clients: dict[Any, str] = {} if clients is None else clients

    def configure(self, config: Config) -> None:
        """Apply the limits a SIGHUP may change (liveconfig.LIVE_KEYS) to new connections."""
        lim = config.limits
        self.max_connections = lim.max_connections
        self.header_timeout = lim.header_timeout
        self.send_timeout = lim.send_timeout

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


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's RequestHandler behind a guard: connection ceiling, head timeout, send timeout."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol,
                 reclaim: Reclaim | None = None) -> None:
        self._guard = guard
        self._inner = inner
        # the fast path that handed this connection over, asked at each new head whether it
        # takes the connection back (fasthttp): only while every head so far had no body
        self._reclaim = reclaim
        self._paused_writing = False
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._head = bytearray()
        self._scanning = True  # False once a request body makes heads undelimitable here
        self._head_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._progress_mark: tuple[int | None, int] = (None, 0)
        self._progress_at = 0.0

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are Transports by behaviour, not by class
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if not self._guard.admit(transport):
            return
        self._arm_head_timer()
        self.adopt(transport)

    def adopt(self, transport: asyncio.Transport) -> None:
        """Take over a connection already admitted and counted (the fast path hands its
        connections over here): from now on its close uncounts it."""
        self._transport = transport
        self._admitted = True
        self._progress_at = time.monotonic()
        self._schedule_watchdog()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        # between requests (no head begun, none with a body seen): the fast path may take back
        if (self._reclaim is not None and self._scanning and self._head_timer is None
                and self._reclaim(self, data)):
            return
        if self._scanning:
            self._scan(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._admitted:
            self._inner.resume_writing()

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport if self._admitted else None

    @property
    def inner(self) -> asyncio.Protocol:
        return self._inner

    def release(self) -> bool:
        """Let go of the connection without closing or uncounting it (the fast path takes it
        back, count included): stop the timers and forward nothing more. Returns whether the
        transport is paused for writing, which the new owner must know."""
        for timer in (self._head_timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._watchdog = None
        self._admitted = False
        self._reclaim = None
        return self._paused_writing

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._watchdog = None
        if self._admitted:
            self._admitted = False
            self._guard.closed(self._transport)
            self._inner.connection_lost(exc)

    # -- head timeout

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._guard.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._transport is not None:
            self._transport.close()  # slowloris: aiohttp sees connection_lost and lets go

    def _scan(self, data: bytes) -> None:
        """Follow request heads through `data`: each head must end within header_timeout of
        its first byte. A head announcing a body stops the scan (bodies are not delimited
        here; the keep-alive timeout bounds what follows)."""
        pos = 0
        while pos < len(data):
            if self._head_timer is None:
                self._arm_head_timer()
            old = len(self._head)
            room = self._guard.head_cap - old
            if room <= 0:
                return  # oversized: aiohttp's parser refuses it; the timer stays armed
            self._head += data[pos:pos + room]
            start = max(0, old - 3)
            ends = [i + len(t) for t in (b"\r\n\r\n", b"\n\n")
                    if (i := self._head.find(t, start)) >= 0]
            if not ends:
                return
            end = min(ends)
            head = bytes(self._head[:end]).lower()
            pos += end - old
            self._head.clear()
            assert self._head_timer is not None
            self._head_timer.cancel()
            self._head_timer = None
            if b"\ncontent-length:" in head or b"\ntransfer-encoding:" in head:
                self._scanning = False
                return

    # -- send timeout

    def _schedule_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(max(0.05, self._guard.send_timeout / 2), self._check_send)

    def _check_send(self) -> None:
        """Abort a connection whose pending output has not moved for send_timeout seconds."""
        self._watchdog = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        progress: list[Any] = [self._progress_mark, self._progress_at]
        alive = check_send_progress(transport, progress, self._guard.send_timeout)
        self._progress_mark, self._progress_at = progress
        if alive:
            self._schedule_watchdog()


#: asked with the guarded connection and the bytes that just arrived; True if it took both
Reclaim = Callable[["GuardedProtocol", bytes], bool]


class Front(Protocol):
    """A protocol in front of aiohttp's (the fast path): made per connection with the guard and
    aiohttp's handler factory, which it uses for the connections it hands over."""

    def __call__(self, guard: ConnectionGuard,
                 handler: Callable[[], asyncio.Protocol]) -> asyncio.Protocol: ...

    def drain(self) -> None: ...


class GuardedSite(web.BaseSite):
    """A TCP listener (host/port or a ready socket) whose connections go through GuardedProtocol."""

    def __init__(self, runner: web.BaseRunner, config: Config, counters: Counters, *,
                 host: str | None = None, port: int = 0, sock: socket.socket | None = None,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 2048,
                 reuse_port: bool = False, front: Front | None = None,
                 node: NodeState | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self.guard = ConnectionGuard(config, counters,
                                     clients=node.proxied if node is not None else None)
        self.front = front
        # server.proxy_protocol: every connection passes a ProxyGate first (trusted peers only)
        self.node = node if config.server.proxy_protocol else None
        self.proxy_stats = ProxyStats()
        self._host, self._port, self._sock = host, port, sock
        self._reuse_port = reuse_port
        self.port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self.port}"

    def _protocol(self) -> asyncio.Protocol:
        node = self.node
        if node is not None:
            return ProxyGate(lambda: node.trusted, self.guard.header_timeout, self.guard.clients,
                             self.proxy_stats, self._inner_protocol)
        return self._inner_protocol()

    def _inner_protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if self.front is not None:
            return self.front(self.guard, server)
        return GuardedProtocol(self.guard, server())

    async def stop(self) -> None:
        await super().stop()
        if self.front is not None:
            self.front.drain()  # idle fast connections close now, busy ones when done

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self._ssl_context is not None:
            # a TLS handshake is part of the head: it gets the same time to finish
            extra["ssl_handshake_timeout"] = self.guard.header_timeout
        if self._sock is not None:
            self._server = await loop.create_server(
                self._protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
                **extra)
        else:
            self._server = await loop.create_server(
                self._protocol, self._host, self._port, ssl=self._ssl_context,
                backlog=self._backlog, reuse_port=self._reuse_port or None, **extra)
        if self._server.sockets:
            self.port = self._server.sockets[0].getsockname()[1]
