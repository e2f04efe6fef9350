"""The connections of the replayer's lean client (replay/wire.py): one keep-alive HTTP/1.1
connection as an asyncio.Protocol reading answers with httptools, and the pool of them per origin.

A pool holds at most `limit` connections; idle ones are reused last-in first-out (the warmest
socket; the cold tail ages out after `keepalive_s`), requests wait first-in first-out when all are
busy, one request in flight per connection (no pipelining: a slow answer must not hold up the ones
queued behind it). A connection that finishes an answer writes the next queued request itself, so
a queued request costs no extra wake-up; a server's `Connection: close` (or HTTP/1.0) retires it.
Bodies are framed by Content-Length, chunked (httptools decodes it) or by the close (RFC 9112
§6.3); a segment's body is only counted, a playlist's kept. A request that fails on a reused
connection before any answer byte (the server closed it while idle: the keep-alive race) is
retried once on another connection, as a GET may be.

A pool with a source address binds each socket to it with IP_BIND_ADDRESS_NO_PORT (Linux), so the
port is chosen by connect(), which may share a port among different targets and finds one in its
own half of the range, not by bind(), which scans the whole range for a port no socket uses:
measured at ~15,000 connections on one address, 2.7 ms per connection through bind() against
0.6 ms through connect() (replay/limits.py keeps a plan within the part where both are fast).

Deadlines are checked by the owner's one timer calling `Pool.sweep`; nothing here sets a timer.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from collections import deque
from typing import Any, Protocol, cast

import httptools

from edge360.replay.exchange import Answer, Exchange, fail

MAX_HEADERS = 200               # answer header fields at most
MAX_KEPT = 64 * 1024 * 1024     # bytes of a kept (playlist) body at most
_FRAMING = (b"content-length", b"transfer-encoding")
#: socket option of ip(7), Linux 4.2+ (Python names it from 3.12 on)
_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Owner(Protocol):
    """What a pool needs of its owner: the client (its shared pools) or one viewer's line."""

    @property
    def limit(self) -> int: ...

    @property
    def connect_timeout(self) -> float: ...

    @property
    def keepalive_s(self) -> float: ...

    @property
    def closed(self) -> bool: ...

    def now(self) -> float: ...

    def arm(self) -> None: ...

    def settled(self, pool: Pool) -> None:
        """`pool` has nothing in flight or waiting (a line's pool then needs no sweeping)."""


class Conn:
    """One keep-alive connection (one per viewer: slots keep it small and its per-answer resets
    cheap); the httptools parser calls its on_* methods. An asyncio.Protocol by its methods,
    not by its base, so that it compiles to a native class (as http.protocol.Connection)."""

    __slots__ = ("connect_deadline", "done", "ex", "got", "head_done", "headers", "idle_since",
                 "keep", "lost", "parser", "parts", "pool", "served", "size", "stage", "status",
                 "timed_out", "transport")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.served = 0              # answers completed: > 0 makes it a reused connection
        self.idle_since = 0.0
        self.lost = False
        self.connect_deadline = 0.0
        self.timed_out = False       # its connect was cancelled by the sweep
        self.stage = "waiting for the loop"  # where its connect is (a timeout says where)
        self._reset()

    def _reset(self) -> None:
        # new lists, not cleared ones: the last Answer still holds the old ones (a body's parts
        # list is made by on_body, and only for a body that is kept)
        self.headers: list[tuple[bytes, bytes]] = []
        self.parts: list[bytes] | None = None
        self.size = 0
        self.status = 0
        self.head_done = self.done = self.got = self.keep = False

    def start(self, ex: Exchange) -> None:
        self.ex, ex.conn = ex, self
        self._reset()
        assert self.transport is not None
        self.transport.write(ex.request)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP (or TLS) transport; uvloop's are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.ex is None:
            # bytes nobody asked for: the next answer could not be told from them
            assert self.transport is not None
            self.transport.abort()
            return
        self.got = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            ex, self.ex = self.ex, None
            if ex is not None:
                ex.conn = None
                if self.done:            # a whole answer, then bytes that are none: keep it
                    self._answer(ex)
                fail(ex, "client", f"bad answer: {exc}")
            assert self.transport is not None
            self.transport.abort()
            return
        if self.done:
            self._complete()

    def eof_received(self) -> bool | None:
        self.pool.forget_idle(self)      # half-closed: not to be picked before connection_lost
        return None

    def pause_writing(self) -> None:
        """A request is one small write: nothing to hold back."""

    def resume_writing(self) -> None:
        """(see pause_writing)"""

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        pool = self.pool
        pool.conns.discard(self)
        pool.forget_idle(self)
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.conn = None
            if ex.future.done():
                pass
            elif self.head_done and not self.done and exc is None and not self._framed():
                self.done = True         # a body delimited by the close (RFC 9112 §6.3 item 8)
                self._answer(ex)
            elif not self.got and self.served and not ex.retried:
                ex.retried = True        # the keep-alive race: the server closed it while idle
                pool.resubmit(ex)
            else:
                kind = "client" if self.head_done else "connection"
                what = "answer cut short" if self.head_done else "closed before an answer"
                fail(ex, kind, f"{what}: {exc}" if exc else what)
        pool.fill()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            raise ValueError("too many header fields")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        ex = self.ex
        if ex is not None and ex.keep_body:
            if self.size > MAX_KEPT:
                raise ValueError("body too big to keep")
            if self.parts is None:
                self.parts = [body]
            else:
                self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            self._reset()                # an interim 1xx answer: the real one follows
        else:
            # asked here: llhttp clears the message's flags once this callback returns
            self.keep = self.parser.should_keep_alive()
            self.done = True

    def _framed(self) -> bool:
        return any(key.lower() in _FRAMING for key, _ in self.headers)

    def _answer(self, ex: Exchange) -> None:
        if not ex.future.done():
            body = b"".join(self.parts or ()) if ex.keep_body else None
            ex.future.set_result(Answer(self.status, self.headers, body, self.size))

    def _complete(self) -> None:
        ex, self.ex = self.ex, None
        assert ex is not None and self.transport is not None
        ex.conn = None
        self.served += 1
        self._answer(ex)                 # before release: the next request resets the state
        if self.keep:
            self.pool.release(self)      # may write the next queued request at once
        else:
            self.transport.close()       # Connection: close; counted until connection_lost


class Pool:
    """The connections to one origin and the requests waiting for one."""

    def __init__(self, client: Owner, host: str, port: int, tls: ssl.SSLContext | None,
                 fields: str, local: str | None = None) -> None:
        self.client, self.host, self.port, self.tls = client, host, port, tls
        self.fields = fields                  # "Host: ...\r\n" (and Authorization from the URL)
        self.local = local                    # the source address to connect from, if any
        self._addr: tuple[Any, ...] | None = None  # the target resolved once, when bound
        self.idle: deque[Conn] = deque()     # bounded by limit: LIFO at the right
        self.pending: deque[Exchange] = deque()  # bounded by the caller's concurrent requests
        self.conns: set[Conn] = set()        # established, idle or busy
        self.connecting: dict[asyncio.Task[None], Conn] = {}

    def submit(self, ex: Exchange) -> None:
        if self.idle:
            self.idle.pop().start(ex)
            return
        self.pending.append(ex)
        self.fill()

    def resubmit(self, ex: Exchange) -> None:
        if self.idle:
            self.idle.pop().start(ex)
        else:
            self.pending.appendleft(ex)

    def release(self, conn: Conn) -> None:
        if self.pending:
            conn.start(self.pending.popleft())
        else:
            conn.idle_since = self.client.now()
            self.idle.append(conn)
            if len(self.idle) == len(self.conns) and not self.connecting:
                self.client.settled(self)

    def forget_idle(self, conn: Conn) -> None:
        if conn.ex is None and conn in self.idle:
            self.idle.remove(conn)

    def fill(self) -> None:
        """Open connections for the waiting requests no connect in progress will serve."""
        client = self.client
        while (self.pending and not client.closed and len(self.connecting) < len(self.pending)
               and len(self.connecting) + len(self.conns) < client.limit):
            conn = Conn(self)
            conn.connect_deadline = client.now() + client.connect_timeout
            task = asyncio.get_running_loop().create_task(self._connect(conn))
            self.connecting[task] = conn
            task.add_done_callback(self._connected)
        client.arm()

    def _connected(self, task: asyncio.Task[None]) -> None:
        self.connecting.pop(task, None)

    async def _connect(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        kind, detail = "connection", ""
        try:
            tls_name = self.host if self.tls else None
            if self.local:
                sock = await self._bound(loop, self.local, conn)
                conn.stage = "making the transport"
                made, _ = await loop.create_connection(
                    lambda: cast(asyncio.Protocol, conn), sock=sock, ssl=self.tls,
                    server_hostname=tls_name)
            else:
                conn.stage = "in create_connection()"
                made, _ = await loop.create_connection(
                    lambda: cast(asyncio.Protocol, conn), self.host, self.port, ssl=self.tls,
                    server_hostname=tls_name)
            # uvloop may call connection_made only after this returns: take the transport here
            conn.transport = made
        except asyncio.CancelledError:
            if not conn.timed_out:
                raise                    # the client is closing
            kind, detail = "timeout", f"connect timed out {conn.stage}"
        except (OSError, ValueError) as exc:     # ssl.SSLError and gaierror are OSErrors
            detail = f"cannot connect to {self.host}:{self.port}: {exc}"
        task = asyncio.current_task()
        if task is not None:
            self.connecting.pop(task, None)      # counted as open (or failed) from here
        if not detail and not conn.lost:
            self.conns.add(conn)
            self.release(conn)
            return
        if self.pending:
            # as aiohttp's request whose connect failed: the oldest waiting request fails
            fail(self.pending.popleft(), kind, detail or "closed while connecting")
        self.fill()

    async def _bound(self, loop: asyncio.AbstractEventLoop, local: str, conn: Conn
                     ) -> socket.socket:
        """A socket connected from `local`, its port left to connect() (module docstring)."""
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        if self._addr is None:
            conn.stage = "resolving the target"
            found = await loop.getaddrinfo(self.host, self.port, family=family,
                                           type=socket.SOCK_STREAM)
            if not found:
                raise OSError(f"{self.host} has no address of the source address's family")
            self._addr = found[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_IP, _NO_PORT, 1)
            except OSError:
                pass  # not Linux: bind() picks the port, as it always did
            sock.bind((local, 0))
            conn.stage = "in connect()"
            await loop.sock_connect(sock, self._addr)
        except BaseException:
            sock.close()  # failed, timed out (cancelled) or the client is closing
            raise
        return sock

    def abandon(self, ex: Exchange) -> None:
        """The caller gave up (cancelled): drop it from the queue, or cut its connection."""
        conn = ex.conn
        if conn is not None:
            conn.ex, ex.conn = None, None
            if conn.transport is not None:
                conn.transport.abort()
        elif ex in self.pending:
            self.pending.remove(ex)

    def sweep(self, now: float) -> bool:
        """Time out what is past its deadline, age out idle connections; False when idle."""
        if any(ex.deadline <= now for ex in self.pending):
            late = [ex for ex in self.pending if ex.deadline <= now]
            self.pending = deque(ex for ex in self.pending if ex.deadline > now)
            for ex in late:
                fail(ex, "timeout", "no connection free in time")
        for conn in list(self.conns):
            busy = conn.ex
            if busy is not None and busy.deadline <= now:
                self.abandon(busy)
                fail(busy, "timeout", "no complete answer in time")
        for task, conn in self.connecting.items():
            if conn.connect_deadline <= now and not conn.timed_out:
                conn.timed_out = True
                task.cancel()
        idle = self.idle
        while idle and idle[0].idle_since + self.client.keepalive_s <= now:
            transport = idle.popleft().transport
            if transport is not None:
                transport.close()
        # idle connections need sweeping only to age out (a viewer's own line keeps its one)
        ageing = bool(idle) and self.client.keepalive_s != math.inf
        return bool(self.pending or self.connecting or ageing or len(idle) < len(self.conns))

    def close(self) -> None:
        for task in self.connecting:
            task.cancel()
        while self.pending:
            fail(self.pending.popleft(), "connection", "client closed")
        for conn in list(self.conns):
            if conn.ex is not None:
                fail(conn.ex, "connection", "client closed")
                self.abandon(conn.ex)
            elif conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
