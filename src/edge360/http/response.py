"""What the content plane writes: a Response (status, header block, body source) and the one
header builder every answer goes through.

A body is one of: `body` (bytes in memory, sent with the head in one write when small), `parts`
(an ordered list of in-memory slices and FileSpans, all at hand now), or `stream` (an async
iterator of the same, for bytes still arriving: a flight, pieces fetched on demand). FileSpans go
out through the kernel's sendfile where the connection allows it (http.send). `length` is the
Content-Length; a stream of unknown length is sent chunked (RFC 9112 §7.1).

`done(sent, seconds)` is called once the body went to the kernel, and `cut(reason)` instead when
it did not (the client left, the source broke off): accounting happens exactly once either way.
`release()` runs exactly once whatever happened, even when the answer was never written (it
closes the files and leaves the flights the body came from).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

import orjson

from edge360 import __version__


class FileSpan:
    """`count` bytes of an open file from `offset` (the response's `release` closes the file).
    `verify()`, when given, says the file is still the version the head described: it is asked
    before the span's last bytes go out, and a False cuts the answer (a file changed in place
    while it was being sent must never complete a body). `view`, when given, is the same bytes
    in memory (a piece the memory tier holds in a memfd, cache.memfd): a connection without
    sendfile (TLS) writes it from there, and holding it keeps the file open."""

    __slots__ = ("count", "fd", "offset", "verify", "view")

    def __init__(self, fd: int, offset: int, count: int,
                 verify: Callable[[], bool] | None = None,
                 view: memoryview | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count
        self.verify = verify
        self.view = view


Part = bytes | memoryview | FileSpan


class Response:
    """One answer (see the module docstring)."""

    __slots__ = ("body", "cache", "carries", "close", "cut", "done", "fields", "length",
                 "parts", "release", "status", "stream")

    def __init__(self, status: int, fields: bytes, *, body: bytes | memoryview | None = None,
                 parts: Sequence[Part] | None = None, stream: AsyncIterator[Part] | None = None,
                 length: int | None = None, cache: str | None = None,
                 done: Callable[[int, float], None] | None = None,
                 cut: Callable[[str], None] | None = None, close: bool = False,
                 release: Callable[[], None] | None = None, carries: int = 0) -> None:
        self.status = status
        self.fields = fields
        self.body = body
        self.parts = parts
        self.stream = stream
        if length is None and stream is None:
            length = len(body) if body is not None else sum(
                p.count if isinstance(p, FileSpan) else len(p) for p in parts or ())
        self.length = length
        self.cache = cache
        self.done = done
        self.cut = cut
        self.close = close
        self.release = release
        #: CARRIES_DATE | CARRIES_SERVER when `fields` hold their own (see carried())
        self.carries = carries

    def released(self) -> None:
        """Run `release` (once)."""
        hook, self.release = self.release, None
        if hook is not None:
            hook()


def encode_fields(headers: dict[str, str]) -> bytes:
    """Header lines, each CRLF-ended. Values never carry CR or LF (they come from our own code or
    from a parsed upstream head, which cannot hold them)."""
    # one list of pieces joined once: compiled, this is half the work of formatting a line per
    # field (no f-string object per line, no tuple unpacking through the iterator protocol)
    pieces: list[str] = []
    for k, v in headers.items():
        pieces.append(k)
        pieces.append(": ")
        pieces.append(v)
        pieces.append("\r\n")
    return "".join(pieces).encode("latin-1", "replace")


_STATUS: Final = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_SERVER: Final = f"Server: edge360/{__version__}\r\n".encode()
_CLOSE: Final = b"Connection: close\r\n"
_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_date: list[object] = [0, b""]


def date_field() -> bytes:
    """The Date field, formatted once a second (RFC 9110 §6.6.1)."""
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date[1]  # type: ignore[return-value]


def status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode()


CARRIES_DATE: Final = 1
CARRIES_SERVER: Final = 2


def carried(headers: dict[str, str]) -> int:
    """Which of Date and Server `headers` hold themselves (an answer from a cache keeps its
    origin's, RFC 9110 §6.6.1): a mask for Response.carries."""
    return (CARRIES_DATE if "Date" in headers else 0) | (
        CARRIES_SERVER if "Server" in headers else 0)


def head_bytes(response: Response, *, close: bool, head_only: bool) -> bytes:
    """The status line and header block of `response` as written: its fields, then
    Content-Length (or chunked framing), Date and Server unless the fields carry them (an
    answer from a cache keeps its origin's, RFC 9110 §6.6.1), and Connection: close when
    closing. 1xx, 204 and 304 carry no Content-Length (RFC 9110 §8.6)."""
    status = response.status
    if status in (204, 304) or status < 200:
        framing = b""
    elif response.length is not None:
        framing = b"Content-Length: %d\r\n" % response.length
    else:
        framing = b"" if head_only else _CHUNKED
    carries = response.carries
    return b"".join((status_line(status), response.fields, framing,
                     b"" if carries & CARRIES_DATE else date_field(),
                     b"" if carries & CARRIES_SERVER else _SERVER,
                     _CLOSE if close else b"", b"\r\n"))


def error_response(status: int, reason: str, headers: dict[str, str] | None = None, *,
                   cors: str | None = None, cache: str | None = None,
                   close: bool = False) -> Response:
    """A refusal: a small JSON body naming the reason, never stored (no-store), readable by a
    player on another origin when `cors` is set."""
    h = {"Content-Type": "application/json"}
    if cors:
        h["Access-Control-Allow-Origin"] = cors
    h["Cache-Control"] = "no-store"
    h.update(headers or {})
    return Response(status, encode_fields(h), body=orjson.dumps({"error": reason}), cache=cache,
                    close=close)


def json_response(data: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """A JSON answer of the node's own endpoints (never cached)."""
    h = {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})}
    return Response(status, encode_fields(h), body=orjson.dumps(data))
