"""Writing a response body to a connection: in-memory slices in chunks with back-pressure, file
spans through the kernel's sendfile, and streams (chunked when their length is unknown).

sendfile: neither asyncio's loop nor uvloop lets a protocol watch its own transport's socket for
writability (add_writer refuses a socket a transport owns), and uvloop has no loop.sendfile. So a
span is sent with os.sendfile on the socket while the transport's own buffer is empty, and when
the socket is full, writability is watched on a duplicate of its descriptor (a separate fd over
the same socket, which both loops accept). TLS connections have no sendfile: their spans are read
in a worker thread (no blocking file call on the loop) and written like memory.

Every sender returns the body bytes written. A body that cannot be completed raises
ConnectionError (the client went away, the source broke off); the caller then aborts the
connection, so a short body is never mistaken for a complete one.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Final, Protocol

from edge360.core.errors import SourceError
from edge360.http.response import FileSpan, Part

#: bytes written per chunk of a big in-memory body (then back-pressure decides)
CHUNK: Final = 256 * 1024
#: bytes one os.sendfile or send call is asked for at most (the loop stays responsive)
SENDFILE_CHUNK: Final = 4 * 1024 * 1024
SEND_CHUNK: Final = SENDFILE_CHUNK
#: bytes of a verified span held back until its file proved unchanged
TAIL: Final = 64 * 1024
#: body bytes an answer's first direct write sends at most before letting the other ready
#: connections write theirs: a herd of a thousand waiters for one object all get their first
#: bytes before any gets its whole body (time to first byte, not one copy of the body each)
FIRST: Final = 64 * 1024


class Writable(Protocol):
    """What a sender needs of the connection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    def writable(self) -> Awaitable[None]: ...
    def drained(self) -> Awaitable[None]: ...
    @property
    def sock(self) -> socket.socket | None: ...


def _transport(conn: Writable) -> asyncio.Transport:
    transport = conn.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    return transport


class Direct:
    """One answer's writes straight to a plain socket (os.write, sendfile), after everything
    the transport holds.

    When the socket takes less than it was asked for, it is full: the sender waits until it is
    writable, without another call to hear EAGAIN. Writability is watched on a duplicate of the
    socket's descriptor (neither asyncio's loop nor uvloop lets a protocol watch a socket its
    transport owns), made at the answer's first wait and kept for its others; the watch stays
    registered from one wait to the next and is dropped the first time it fires with nobody
    waiting (the sender awaiting its source instead), so the loop never spins on a writable
    socket. `close()` releases both."""

    __slots__ = ("_conn", "_fd", "_first", "_loop", "_on", "_waiter", "_watch")

    def __init__(self, conn: Writable, sock: socket.socket) -> None:
        self._conn = conn
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._watch = -1
        self._on = False
        self._waiter: asyncio.Future[None] | None = None
        self._first = True  # no body byte written yet (FIRST)

    async def start(self) -> None:
        """Wait until the transport's own buffer is empty: what follows comes after it."""
        await self._conn.drained()
        _transport(self._conn)

    async def write(self, view: memoryview) -> None:
        pos, size = 0, len(view)
        while pos < size:
            asked = min(size - pos, FIRST if self._first else SEND_CHUNK)
            try:
                # os.write on the descriptor: the loops hand out a socket wrapper without send()
                n = os.write(self._fd, view[pos:pos + asked])
            except BlockingIOError:
                n = 0
            except (BrokenPipeError, ConnectionResetError) as e:
                raise ConnectionResetError(f"client went away: {e}") from None
            pos += n
            await self._sent(n, asked, pos < size)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        end = offset + count
        while offset < end:
            asked = min(end - offset, FIRST if self._first else SENDFILE_CHUNK)
            try:
                n = os.sendfile(self._fd, fd, offset, asked)
            except BlockingIOError:
                await self._full()
                continue
            except (BrokenPipeError, ConnectionResetError) as e:
                raise ConnectionResetError(f"client went away: {e}") from None
            if n == 0:
                raise SourceError("the source ended before its length")  # a file shrank
            offset += n
            await self._sent(n, asked, offset < end)

    async def _sent(self, n: int, asked: int, more: bool) -> None:
        """After a call that sent `n` of `asked` bytes: a short one means the socket is full
        (wait until it is writable; the others have their turn meanwhile); the answer's first
        bytes out with `more` to come, the other ready answers' turn (FIRST)."""
        if n < asked:
            self._first = False
            await self._full()
        elif self._first and more:
            self._first = False
            await asyncio.sleep(0)
            _transport(self._conn)  # gone meanwhile: never write to a descriptor reused since

    async def _full(self) -> None:
        """Wait until the socket is writable again."""
        loop = self._loop
        if self._watch < 0:
            self._watch = os.dup(self._fd)
        waiter = self._waiter = loop.create_future()
        if not self._on:
            loop.add_writer(self._watch, self._fire)
            self._on = True
        try:
            await waiter
        finally:
            self._waiter = None
        _transport(self._conn)

    def _fire(self) -> None:
        waiter = self._waiter
        if waiter is None:  # writable, nobody waiting: stop watching until the next wait
            self._loop.remove_writer(self._watch)
            self._on = False
        elif not waiter.done():
            waiter.set_result(None)

    @property
    def watching(self) -> bool:
        """Whether the socket's writability is being watched now."""
        return self._on

    def close(self) -> None:
        if self._on:
            self._loop.remove_writer(self._watch)
            self._on = False
        if self._watch >= 0:
            os.close(self._watch)
            self._watch = -1


def direct(conn: Writable) -> Direct | None:
    """The direct writer of a plain connection; None under TLS (no socket to write to)."""
    sock = conn.sock
    return Direct(conn, sock) if sock is not None else None


async def write_memory(conn: Writable, data: bytes | memoryview, out: Direct | None) -> int:
    """Write `data`: through `out`, the plain socket's direct writer, straight to the kernel
    (as much as its buffer takes at each turn, never copied into the transport's buffer
    first); without one (TLS) in chunks, each once the transport has room."""
    view = memoryview(data)
    if out is not None:
        await out.start()
        await out.write(view)
        return len(view)
    for pos in range(0, len(view), CHUNK):
        await conn.writable()
        _transport(conn).write(view[pos:pos + CHUNK])
    return len(view)


async def write_span(conn: Writable, span: FileSpan, out: Direct | None) -> int:
    """Write a file span: sendfile through `out` on a plain socket, else (TLS) its bytes in
    memory or chunks read in a thread. A span with `verify` keeps its last bytes back until
    the file proved unchanged (see FileSpan)."""
    if span.verify is None:
        return await _write_span(conn, span, out)
    tail = min(TAIL, span.count)
    head = FileSpan(span.fd, span.offset, span.count - tail)
    if head.count:
        await _write_span(conn, head, out)
    data, same = await asyncio.to_thread(_read_verified, span, tail)
    if not same or len(data) != tail:
        raise SourceError("file changed while it was being sent")
    await conn.writable()
    _transport(conn).write(data)
    return span.count


def _read_verified(span: FileSpan, tail: int) -> tuple[bytes, bool]:
    data = os.pread(span.fd, tail, span.offset + span.count - tail)
    assert span.verify is not None
    return data, span.verify()


async def _write_span(conn: Writable, span: FileSpan, out: Direct | None) -> int:
    if out is None:
        if span.view is not None:
            return await write_memory(conn, span.view, None)  # TLS: the bytes are in memory
        return await _copy_span(conn, span)
    if span.count:
        await out.start()
        await out.sendfile(span.fd, span.offset, span.count)
    return span.count


async def _copy_span(conn: Writable, span: FileSpan) -> int:
    sent, offset = 0, span.offset
    while sent < span.count:
        n = min(CHUNK, span.count - sent)
        data = await asyncio.to_thread(os.pread, span.fd, n, offset + sent)
        if not data:
            raise SourceError("file ended before its length")
        await conn.writable()
        _transport(conn).write(data)
        sent += len(data)
    return sent


async def write_parts(conn: Writable, parts: Sequence[Part], chunked: bool = False) -> int:
    """Write `parts` in order, through one direct writer on a plain socket."""
    out = direct(conn)
    try:
        sent = 0
        for part in parts:
            sent += await write_part(conn, part, chunked, out)
        return sent
    finally:
        if out is not None:
            out.close()


async def write_part(conn: Writable, part: Part, chunked: bool, out: Direct | None) -> int:
    size = part.count if isinstance(part, FileSpan) else len(part)
    if not size:
        return 0
    if chunked:
        _transport(conn).write(b"%x\r\n" % size)
    sent = await write_span(conn, part, out) if isinstance(part, FileSpan) \
        else await write_memory(conn, part, out)
    if chunked:
        _transport(conn).write(b"\r\n")
    return sent


async def write_stream(conn: Writable, stream: AsyncIterator[Part], length: int | None) -> int:
    """Write a stream; chunked when `length` is None. A stream that yields more or fewer bytes
    than `length` raises SourceError (the head promised that length)."""
    chunked = length is None
    sent = 0
    out = direct(conn)
    try:
        async for part in stream:
            sent += await write_part(conn, part, chunked, out)
            if length is not None and sent > length:
                raise SourceError("stream longer than its Content-Length")
    finally:
        if out is not None:
            out.close()
    if length is not None and sent != length:
        raise SourceError("stream shorter than its Content-Length")
    if chunked:
        _transport(conn).write(b"0\r\n\r\n")
    return sent
