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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final, Protocol

from edge360.http.response import FileSpan, Part

#: bytes written per chunk of a big in-memory body (then back-pressure decides)
CHUNK: Final = 256 * 1024
#: bytes one os.sendfile or send call is asked for at most (the loop stays responsive)
SENDFILE_CHUNK: Final = 4 * 1024 * 1024
SEND_CHUNK: Final = SENDFILE_CHUNK
#: bytes of a verified span held back until its file proved unchanged
TAIL: Final = 64 * 1024


class Writable(Protocol):
    """What a sender needs of the connection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    def writable(self) -> Awaitable[None]: ...
    def drained(self) -> Awaitable[None]: ...
    @property
    def sock(self) -> socket.socket | None: ...


class SourceError(ConnectionError):
    """The body's source broke off (an upstream, a piece that failed validation)."""


def _transport(conn: Writable) -> asyncio.Transport:
    transport = conn.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    return transport


async def write_memory(conn: Writable, data: bytes | memoryview) -> int:
    """Write `data`: on a plain socket straight to the kernel (as much as its buffer takes at
    each turn, never copied into the transport's buffer first), else (TLS) in chunks, each
    once the transport has room."""
    view = memoryview(data)
    sock = conn.sock
    if sock is not None:
        pos = 0

        def send() -> int:
            # os.write on the descriptor: the loops hand out a socket wrapper without send()
            return os.write(sock.fileno(), view[pos:pos + SEND_CHUNK])
        async for n in _pump(conn, sock, send):
            pos += n
            if pos >= len(view):
                break
        return len(view)
    for pos in range(0, len(view), CHUNK):
        await conn.writable()
        _transport(conn).write(view[pos:pos + CHUNK])
    return len(view)


async def _pump(conn: Writable, sock: socket.socket,
                send: Callable[[], int]) -> AsyncIterator[int]:
    """Call `send()` (a non-blocking send of the next bytes on `sock`) while the caller wants
    more, yielding what each call sent; when the socket is full, wait until it is writable.
    Writability is watched on a duplicate of the socket's descriptor: neither asyncio's loop
    nor uvloop lets a protocol watch a socket its transport owns. Starts once the transport's
    own buffer is empty, so these bytes follow everything written before."""
    await conn.drained()
    _transport(conn)
    loop = asyncio.get_running_loop()
    watch = -1
    try:
        while True:
            try:
                n = send()
            except BlockingIOError:
                n = -1
            if n > 0:
                yield n
                continue
            if n == 0:
                raise SourceError("the source ended before its length")  # a file shrank
            if watch < 0:
                watch = os.dup(sock.fileno())
            ready = loop.create_future()
            loop.add_writer(watch, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(watch)
            _transport(conn)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise ConnectionResetError(f"client went away: {e}") from None
    finally:
        if watch >= 0:
            os.close(watch)


async def write_span(conn: Writable, span: FileSpan) -> int:
    """Write a file span: sendfile on a plain socket, else chunks read in a thread. A span with
    `verify` keeps its last bytes back until the file proved unchanged (see FileSpan)."""
    if span.verify is None:
        return await _write_span(conn, span)
    tail = min(TAIL, span.count)
    head = FileSpan(span.fd, span.offset, span.count - tail)
    if head.count:
        await _write_span(conn, head)
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


async def _write_span(conn: Writable, span: FileSpan) -> int:
    sock = conn.sock
    if sock is None and span.view is not None:
        return await write_memory(conn, span.view)  # TLS: the same bytes are in memory
    if sock is None or not span.count:
        return await _copy_span(conn, span)
    offset, end = span.offset, span.offset + span.count

    def send() -> int:
        return os.sendfile(sock.fileno(), span.fd, offset, min(end - offset, SENDFILE_CHUNK))
    async for n in _pump(conn, sock, send):
        offset += n
        if offset >= end:
            break
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
    sent = 0
    for part in parts:
        sent += await write_part(conn, part, chunked)
    return sent


async def write_part(conn: Writable, part: Part, chunked: bool = False) -> int:
    size = part.count if isinstance(part, FileSpan) else len(part)
    if not size:
        return 0
    if chunked:
        _transport(conn).write(b"%x\r\n" % size)
    sent = await write_span(conn, part) if isinstance(part, FileSpan) \
        else await write_memory(conn, part)
    if chunked:
        _transport(conn).write(b"\r\n")
    return sent


async def write_stream(conn: Writable, stream: AsyncIterator[Part], length: int | None) -> int:
    """Write a stream; chunked when `length` is None. A stream that yields more or fewer bytes
    than `length` raises SourceError (the head promised that length)."""
    chunked = length is None
    sent = 0
    async for part in stream:
        sent += await write_part(conn, part, chunked)
        if length is not None and sent > length:
            raise SourceError("stream longer than its Content-Length")
    if length is not None and sent != length:
        raise SourceError("stream shorter than its Content-Length")
    if chunked:
        _transport(conn).write(b"0\r\n\r\n")
    return sent
