"""The one HTTP/1.1 connection of the content plane (plain TCP and TLS alike): it reads requests
(http.wire), asks the handler for each answer in order, and writes it (http.send).

The handler answers a request with a Response at once (a memory hit: no task, no await) or with
an awaitable of one (a miss, a disk read, an upstream); pipelined requests are answered in order,
one at a time, and bytes that arrive meanwhile wait (reading pauses past MAX_BACKLOG). The limits
of http.guard hold on every connection: the connection ceiling (counted once), the head timeout
(first byte of a head to its end), the keep-alive timeout, the head size whatever the write
boundaries, and the send timeout (a reader that stopped reading is cut off).

A body that cannot be completed (the client left, the source broke off) aborts the connection:
a client never sees a short body end cleanly. Such a cut is counted by the response's `cut`
callback, and logged in one line by whoever knows why (never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable
from typing import Final, Protocol, cast

from edge360.core.errors import Edge360Error, SourceError
from edge360.http.guard import ConnectionGuard
from edge360.http.outbox import Outbox
from edge360.http.response import Response, head_bytes
from edge360.http.send import CHUNK, write_parts, write_stream
from edge360.http.timers import Deadline, SendWatchdog
from edge360.http.wire import Request, RequestReader, WireError

log = logging.getLogger("edge360")

#: request bytes held at most while an answer is being written (then reading pauses)
MAX_BACKLOG: Final = 256 * 1024
#: bytes a TLS connection buffers before its writer waits
TLS_HIGH_WATER: Final = 256 * 1024
#: an answer of at least this many body bytes is written at once, and watched until it is sent
WATCHED: Final = 64 * 1024
#: seconds a refused connection keeps reading (and dropping) before it closes
LINGER: Final = 2.0


class Handler(Protocol):
    """What a connection asks of the application (http.dispatch)."""

    def respond(self, request: Request) -> Response | Awaitable[Response]: ...
    def refuse(self, error: Edge360Error) -> Response: ...
    def observe(self, request: Request | None, response: Response, wire_bytes: int,
                seconds: float, peer: str) -> None: ...


class Live(Protocol):
    """The listener's set of open connections (drain closes them)."""

    draining: bool

    def add(self, conn: Connection) -> None: ...
    def discard(self, conn: Connection) -> None: ...


class Connection:
    """One client connection (see the module docstring). It has every method of asyncio.Protocol
    without inheriting it: with a Python base it would compile as an ordinary Python class, its
    attributes read from a dict (docs/ARCHITECTURE.md, "Compiled modules")."""

    def __init__(self, handler: Handler, guard: ConnectionGuard, live: Live, outbox: Outbox,
                 *, tls: bool = False) -> None:
        self._handler = handler
        self._guard = guard
        self._live = live
        self._outbox = outbox
        #: a small answer's bytes, written at the end of the loop's turn (http.outbox)
        self._queued: bytes | bytearray | None = None
        self._tls = tls
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self._reader: RequestReader | None = None
        self._backlog = bytearray()
        self._busy = False
        self._eof = False
        self._closing = False  # drain: close once the answer in progress is written
        self._heard = False  # a byte has arrived (a new connection's first head may be coming)
        self._lingering = False  # refused: what still arrives is read and dropped, then close
        self._head_began = 0.0  # loop time the head still arriving began
        self._paused_reading = False
        self._paused_writing = False
        self._resume: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._deadline = Deadline(self._loop, self._timed_out)
        self._watchdog: SendWatchdog | None = None

    # -- what http.send needs (http.send.Writable)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def sock(self) -> socket.socket | None:
        return self._sock

    async def writable(self) -> None:
        while self._paused_writing and self._transport is not None:
            self._resume = self._loop.create_future()
            await self._resume

    def drained(self) -> Awaitable[None]:
        return self.writable()  # the buffer limits are 0: paused means "not empty yet"

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        guard = self._guard
        if not guard.admit(transport):
            return
        self._transport = transport
        if self._tls:
            # TLS transports do not report a buffer drained to 0 (asyncio's and uvloop's SSL
            # flow control): they get ordinary limits; nothing is sent with sendfile there
            transport.set_write_buffer_limits(high=TLS_HIGH_WATER, low=TLS_HIGH_WATER // 4)
        else:
            # pause as soon as anything is buffered, resume when all of it went to the kernel:
            # so "writable" also means "drained", which a sendfile after it needs
            transport.set_write_buffer_limits(high=0)
            self._sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        address = guard.clients.get(transport) or (peer[0] if isinstance(peer, tuple) else "")
        self._reader = RequestReader(address, guard.max_head, tls=self._tls)
        self._live.add(self)
        if self._live.draining:
            self._closing = True
        self._deadline.arm(guard.header_timeout)
        self._watchdog = SendWatchdog(self._loop, transport, lambda: self._guard.send_timeout,
                                      lambda: self._busy)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._lingering:
            return
        self._heard = True
        if self._busy:
            self._backlog += data
            if len(self._backlog) > MAX_BACKLOG and not self._paused_reading:
                self._paused_reading = True
                self._transport.pause_reading()
            return
        self._consume(data)

    def eof_received(self) -> bool:
        self._eof = True
        if not self._busy or self._lingering:
            self._close()
        # a plain transport stays open for an answer on its way out (TLS cannot half-close)
        return not self._tls

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self._watchdog is not None:
            self._watchdog.watch()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._queued = None
        self._deadline.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._live.discard(self)
        self._guard.closed(transport)
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)
        if self._task is not None:
            self._task.cancel()

    # -- requests

    def _consume(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None
        began = reader.begun
        try:
            reader.feed(data)
        except WireError as e:
            reader.ready.clear()
            self._closing = True
            self._answer(None, self._handler.refuse(e.error))
            return
        if reader.mid_message and reader.begun != began:
            # a head began in these bytes and is not complete: it has header_timeout from now
            # (a head that arrived whole is answered at once: no timer for it)
            self._head_began = self._loop.time()
            self._deadline.arm_at(self._head_began + self._guard.header_timeout)
        self._next()

    def _next(self) -> None:
        """Answer the queued requests in order while answers complete at once."""
        reader = self._reader
        assert reader is not None
        while reader.ready and not self._busy and self._transport is not None:
            request = reader.ready.popleft()
            self._busy = True
            self._deadline.disarm()
            result = self._handler.respond(request)
            if isinstance(result, Response):
                self._answer(request, result)
            else:
                self._task = self._loop.create_task(self._await(request, result))
        if not self._busy and self._transport is not None:
            if reader.mid_message:
                # a head still arriving keeps the deadline it got when it began (never later:
                # a trickle of bytes cannot stretch it)
                self._deadline.arm_at(self._head_began + self._guard.header_timeout)
                return
            if self._closing or self._eof:
                self._close()
            else:
                self._deadline.arm(self._guard.keepalive_timeout)

    async def _await(self, request: Request, result: Awaitable[Response]) -> None:
        response = await result
        self._task = None
        self._answer(request, response)
        if not self._busy:
            self._resumed()

    # -- answers

    def _answer(self, request: Request | None, response: Response) -> None:
        transport = self._transport
        if transport is None:
            response.released()
            return
        self._busy = True
        close = (response.close or self._closing or self._eof
                 or (request is not None and not request.keep_alive))
        head_only = request is not None and request.method == "HEAD"
        head = head_bytes(response, close=close, head_only=head_only)
        body = response.body
        if head_only or response.status in (204, 304) or (
                response.parts is None and response.stream is None
                and (body is None or len(body) <= CHUNK)):
            sent = 0 if head_only or body is None or response.status in (204, 304) else len(body)
            data = head + body if sent and body is not None else head
            if sent < WATCHED:
                self._later(data)
            else:  # a big answer may wait for the reader: the watchdog looks after it
                self._write(data)
                if self._watchdog is not None:
                    self._watchdog.watch()
            response.released()
            self._finish(request, response, len(head) + sent, sent, close)
            return
        self._task = self._loop.create_task(self._send(request, response, head, close))

    async def _send(self, request: Request | None, response: Response, head: bytes,
                    close: bool) -> None:
        if self._watchdog is not None:
            self._watchdog.watch()
        self._write(head)
        try:
            if response.stream is not None:
                sent = await write_stream(self, response.stream, response.length)
            elif response.parts is not None:
                sent = await write_parts(self, response.parts)
            else:
                assert response.body is not None
                sent = await write_parts(self, (response.body,))
        except (OSError, Edge360Error, asyncio.CancelledError) as e:
            self._cut(response, e)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        except Exception as e:  # a bug: the answer is cut, never left hanging
            log.exception("sending an answer failed")
            self._cut(response, e)
            return
        finally:
            response.released()
        self._task = None
        self._finish(request, response, len(head) + sent, sent, close)
        if not self._busy:
            self._resumed()

    def _cut(self, response: Response, error: BaseException) -> None:
        """The body broke off: abort (never a clean short end) and let the response count it."""
        self._task = None
        if self._transport is not None:
            self._transport.abort()
        if response.cut is not None:
            source = isinstance(error, (SourceError, Edge360Error)) or (
                isinstance(error, OSError) and not isinstance(error, ConnectionError))
            response.cut("source" if source else "client")

    def _finish(self, request: Request | None, response: Response, wire: int, sent: int,
                close: bool) -> None:
        seconds = time.monotonic() - request.started if request is not None else 0.0
        if response.done is not None:
            response.done(sent, seconds)
        peer = self._reader.peer if self._reader is not None else ""
        self._handler.observe(request, response, wire, seconds, peer)
        self._busy = False
        transport = self._transport
        if not close or transport is None:
            return
        if request is None and not self._tls and transport.can_write_eof():
            # a refused head: the client may still be sending it. Closing now with unread
            # bytes would reset the connection and could destroy the answer on its way, so
            # the write side ends, what still arrives is dropped, and the close follows
            # (RFC 9112 §9.6, a "lingering close")
            self._lingering = True
            self.flush()
            transport.write_eof()
            self._deadline.arm(LINGER)
            return
        self._close()

    # -- writing (every write and close goes through these, so queued bytes stay first)

    def _later(self, data: bytes) -> None:
        """Queue a small answer for the end of the loop's turn (http.outbox)."""
        queued = self._queued
        if queued is None:
            self._queued = data
            self._outbox.add(self)
            return
        if not isinstance(queued, bytearray):  # pipelined answers of one turn: one write
            queued = self._queued = bytearray(queued)
        queued += data  # in place: many answers queued in one turn never cost n² copies

    def flush(self) -> None:
        """Write the queued bytes now: at the end of the turn, or before anything else."""
        data, transport = self._queued, self._transport
        self._queued = None
        if data is None or transport is None:
            return
        transport.write(data)
        if self._tls and self._watchdog is not None and transport.get_write_buffer_size():
            # TLS buffers below its high-water mark (a plain transport pauses, so watches)
            self._watchdog.watch()

    def _write(self, data: bytes) -> None:
        """Write `data` now, after what is queued."""
        self.flush()
        if self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        """Close once the queued bytes are written (the transport sends what it buffered)."""
        if self._transport is not None:
            self.flush()
            self._transport.close()

    def _resumed(self) -> None:
        """An answer written by a task completed: read what waited, answer what is queued."""
        if self._transport is None:
            return
        if self._paused_reading:
            self._paused_reading = False
            self._transport.resume_reading()
        if self._backlog:
            data, self._backlog = bytes(self._backlog), bytearray()
            self._consume(data)
        else:
            self._next()

    # -- time and drain

    def _timed_out(self) -> None:
        # a head not ended in time, a keep-alive connection idle too long, a lingering close
        if not self._busy:
            self._close()

    def drain(self) -> None:
        """The listener closed: close now when idle, else after the answer in progress. A
        connection accepted just before is not idle until its first head came (or its head
        timeout): a drain or a takeover never closes a new connection without an answer."""
        self._closing = True
        reader = self._reader
        if not self._busy and self._heard and (reader is None or not reader.mid_message):
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
