"""The lean HTTP/1.1 connection of the content hit path: an asyncio.Protocol that parses request
heads with httptools and writes prepared answers itself, handing the connection to aiohttp for
everything it does not answer (DESIGN.md, "The hot path").

What it answers is decided elsewhere (`fastpath`): per complete request head the answerer returns
an `Answer` (a prepared header block plus in-memory bytes, slices of pieces or a file span) or
None. None hands the connection over: aiohttp's RequestHandler is made from the runner's server
factory, put behind the same `limits.GuardedProtocol` every aiohttp connection has, installed with
`transport.set_protocol` and fed the raw bytes from the unanswered request's first byte on.
When the next head begins and aiohttp is idle on the connection (handback), the fast path takes
it back; a request with a body keeps it with aiohttp for good.

Request boundaries are found here, not by the parser: a request the fast path may answer has no
body, so it ends at its blank line, and only complete heads are parsed. A pipelined batch thus
splits cleanly: the answered requests are written in order, the rest (from the first unanswered
head on) goes to aiohttp verbatim. A head the parser refuses, a head with a body, bare-LF line
ends or an oversized head are handed over at their own first byte, so aiohttp answers (or
refuses) them as it would have without the fast path.

The guarantees of limits.GuardedProtocol hold here too: the connection ceiling (counted once; the
count moves with the connection on hand-off), the head timeout (first byte of a head to its end),
the keep-alive timeout and the send timeout (the same watchdog). Big bodies go out in chunks with
back-pressure (pause_writing/resume_writing); file spans through the loop's sendfile where it has
one (the default loop), else chunks read in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from edge360.http import handback
from edge360.http.guard import ConnectionGuard, GuardedProtocol
from edge360.http.send import CHUNK, BodySender
from edge360.http.timers import ConnectionTimers
from edge360.http.wire import Answer, Answerer, HeadParser, Request, date_field
from edge360.node.state import NodeState
from edge360.security.clientaddr import client_address

#: request bytes buffered at most while an answer is still being written (then reading pauses)
MAX_BUFFER = 256 * 1024
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode("latin-1")
_CLOSE = b"Connection: close\r\n"
_STATUS = {200: b"HTTP/1.1 200 OK\r\n", 206: b"HTTP/1.1 206 Partial Content\r\n"}


class FastStats:
    """In-process counters of one listener: what the fast path answered and handed over."""

    def __init__(self) -> None:
        self.answered = 0
        self.handed_off = 0
        self.taken_back = 0  # connections aiohttp was idle on when their next head began


class FastListener:
    """The fast path of one listener (a limits.Front): makes its connections, counts what they
    answered, and drains them at shutdown."""

    def __init__(self, answer: Answerer, keepalive_timeout: float,
                 node: NodeState | None = None) -> None:
        self.answer = answer
        self.keepalive_timeout = keepalive_timeout
        self.node = node  # for the access log (server.access_log) and its client address
        self.stats = FastStats()
        self._live: set[FastProtocol] = set()  # bounded by limits.max_connections
        self._draining = False
        self._empty: asyncio.Event | None = None

    def __call__(self, guard: ConnectionGuard,
                 handler: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        return FastProtocol(self, guard, handler)

    def add(self, protocol: FastProtocol) -> None:
        self._live.add(protocol)

    def discard(self, protocol: FastProtocol) -> None:
        self._live.discard(protocol)
        if not self._live and self._empty is not None:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._live)

    def drain(self) -> None:
        """The listener closed: idle connections close now, busy ones after their answer."""
        self._draining = True
        for protocol in list(self._live):
            protocol.drain()

    async def wait_drained(self, seconds: float) -> None:
        """Wait up to `seconds` for the answers in flight, then cut what is left."""
        if self._live:
            self._empty = asyncio.Event()
            try:
                await asyncio.wait_for(self._empty.wait(), seconds)
            except TimeoutError:
                pass
        for protocol in list(self._live):
            protocol.abort()

    @property
    def draining(self) -> bool:
        return self._draining


class FastProtocol(BodySender, ConnectionTimers, asyncio.Protocol):
    """A connection: answer what the answerer can, hand the rest (and the connection) to aiohttp."""

    def __init__(self, listener: FastListener, guard: ConnectionGuard,
                 aiohttp_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = aiohttp_handler
        self._stats = listener.stats
        self._keepalive = listener.keepalive_timeout
        self._live = listener
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._parse = HeadParser()
        self._peer = ""
        self._busy = False  # an answer is being written
        self._head_len = 0  # bytes of the status line and header of the answer being written
        self._paused_writing = False
        self._paused_reading = False
        self._eof = False
        self._closing = False  # drain: close once idle
        self._heard = False  # a byte has arrived (a new connection's first head may be on its way)
        self._resume: asyncio.Future[None] | None = None
        # the head or keep-alive timeout is a deadline; one timer per connection, re-armed
        # lazily (only when it fires before the deadline or the deadline moves earlier)
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._progress: list[Any] = [(None, 0), 0.0]
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        guard = self._guard
        if not guard.admit(transport):
            self._transport = None
            return
        peer = transport.get_extra_info("peername")
        # a PROXY header (proxyproto) names the client; else the TCP peer is the client
        self._peer = guard.clients.get(transport) or (peer[0] if isinstance(peer, tuple) else "")
        self._live.add(self)
        if self._live.draining:
            self._closing = True
        self._arm(self._guard.header_timeout)
        self._progress[1] = time.monotonic()
        self._schedule_watchdog()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._heard = True
        if not self._buf:
            self._arm(self._guard.header_timeout)  # a new head starts: it has header_timeout
        self._buf += data
        if self._busy:
            if len(self._buf) > MAX_BUFFER and not self._paused_reading:
                self._paused_reading = True
                self._transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        if not self._busy and self._transport is not None:
            self._transport.close()
        return True  # keep the transport: an answer may still be on its way out

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._cancel_timers()
        self._live.discard(self)
        self._guard.closed(transport)
        if self._resume is not None and not self._resume.done():
            self._resume.set_exception(ConnectionResetError("connection lost"))
        if self._task is not None:
            self._task.cancel()

    # -- requests

    def _process(self) -> None:
        """Answer complete heads in the buffer, in order, until one needs aiohttp or writing
        has to wait."""
        transport = self._transport
        max_head = self._guard.head_cap
        while transport is not None and not self._busy and not transport.is_closing():
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                # a head that cannot be fast (another method, bare-LF line ends, TLS or other
                # bytes) goes to aiohttp at once, so it answers or refuses as soon as it would
                start = bytes(buf[:6])
                if (len(buf) > max_head or b"\n\n" in buf
                        or not (b"GET /".startswith(start[:5]) or b"HEAD /".startswith(start))):
                    self._hand_off()
                elif not buf and self._closing:
                    transport.close()
                return
            end += 4
            raw_head = bytes(buf[:end])
            request = self._parse(raw_head, self._peer)
            # the listener's answerer, read per request: a SIGHUP may have replaced it
            answer = self._live.answer(request) if request is not None else None
            if answer is None:
                self._hand_off()
                return
            del buf[:end]
            self._stats.answered += 1
            self._write(answer, request, raw_head)  # type: ignore[arg-type]
            transport = self._transport
        if transport is not None and not self._busy and not self._buf:
            self._arm(self._keepalive)

    # -- writing

    def _write(self, answer: Answer, request: Request, raw_head: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._cancel_timer()
        close = not request.keep_alive or self._closing
        head = b"".join((_STATUS[answer.status], answer.fields,
                         date_field() if answer.date else b"", _SERVER if answer.server else b"",
                         _CLOSE if close else b"", b"\r\n"))
        self._head_len = len(head)
        body = answer.body
        if answer.parts is not None:
            parts = answer.parts
            count = sum(len(p) for p in parts)
            if count > CHUNK:
                transport.write(head)
                self._busy = True
                self._task = self._loop.create_task(
                    self._send_memory(parts, count, answer, request, close))
                return
            transport.write(b"".join((head, *parts)))
            self._finish(answer, request, count, close, from_task=False)
            return
        if answer.file is not None:
            self._busy = True
            self._task = self._loop.create_task(
                self._send_file(transport, head, answer, request, close, raw_head))
            return
        if body is None or len(body) <= CHUNK:
            transport.write(head + body if body else head)
            self._finish(answer, request, len(body) if body else 0, close, from_task=False)
            return
        transport.write(head)
        self._busy = True
        self._task = self._loop.create_task(
            self._send_memory((memoryview(body),), len(body), answer, request, close))

    def _finish(self, answer: Answer, request: Request, sent: int, close: bool, *,
                from_task: bool) -> None:
        self._busy = False
        self._task = None
        seconds = time.monotonic() - request.started
        if answer.done is not None:
            answer.done(sent, seconds)
        node = self._live.node
        if node is not None and node.access_log is not None:
            _log(node, answer, request, self._head_len + sent, seconds)
        transport = self._transport
        if transport is None:
            return
        if close or self._eof:
            transport.close()
            return
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        if self._buf:
            self._arm(self._guard.header_timeout)
            if from_task:
                self._process()  # nothing above is still processing
        else:
            self._arm(self._keepalive)

    # -- hand-off to aiohttp

    def _unanswer(self, raw_head: bytes) -> None:
        self._busy = False
        self._task = None
        self._stats.answered -= 1
        if self._transport is None:
            return
        self._buf[:0] = raw_head  # in front of whatever was pipelined behind it
        self._hand_off()

    def _hand_off(self) -> None:
        transport = self._transport
        assert transport is not None
        self._stats.handed_off += 1
        self._cancel_timers()
        self._live.discard(self)
        self._transport = None  # the connection (and its count) now belongs to the guard
        guarded = GuardedProtocol(self._guard, self._make_handler(), self._take_back)
        transport.set_protocol(guarded)
        guarded.adopt(transport)
        if self._paused_writing:
            guarded.pause_writing()
        if self._paused_reading:
            transport.resume_reading()
        data, self._buf = bytes(self._buf), bytearray()
        if data:
            guarded.data_received(data)
        if self._eof and not guarded.eof_received():
            transport.close()

    def _take_back(self, guarded: GuardedProtocol, data: bytes) -> bool:
        """A new head begins on a connection aiohttp holds: take it back if aiohttp is idle on
        it (handback), so one miss does not keep a viewer's connection off the fast path."""
        transport = guarded.transport
        if (transport is None or transport.is_closing() or self._live.draining
                or not handback.idle(guarded.inner)):
            return False
        self._stats.taken_back += 1
        self._paused_writing = guarded.release()
        self._paused_reading = False  # resumed at the hand-off; aiohttp idle has not paused it
        handback.detach(guarded.inner)
        transport.set_protocol(self)
        self._transport = transport
        self._live.add(self)
        self._progress = [(None, 0), time.monotonic()]
        self._schedule_watchdog()
        self.data_received(data)
        return True

    # -- drain

    def drain(self) -> None:
        """Close now if idle, else right after the answer being written. A connection accepted
        just before the listener closed is not idle until its first head has come (or its head
        timeout): a drain or a takeover never closes a new connection without an answer."""
        self._closing = True
        if self._transport is not None and not self._busy and not self._buf and self._heard:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _log(node: NodeState, answer: Answer, request: Request, sent: int, seconds: float) -> None:
    """The access log line of a fast answer, as the middleware writes it for aiohttp's."""
    assert node.access_log is not None
    client = request.peer
    if node.trusted:
        client = client_address(client, CIMultiDict(request.headers), node.trusted)
    path, _, query = request.target.partition("?")
    at = answer.fields.find(b"X-Cache: ")
    cache = answer.fields[at + 9:answer.fields.index(b"\r", at)].decode() if at >= 0 else None
    node.access_log.request(client=client, method=request.method, path=path, query=query,
                            status=answer.status, sent=sent, seconds=seconds, cache=cache,
                            ua=request.fields.get("user-agent", ""))
