"""The messages of the fast path: a parsed request head as the answerer sees it, the answer it
returns, and the Date field (formatted once a second). Parsing stays strict: anything the fast
path is unsure of parses to None, and the request goes to aiohttp (see fasthttp)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

import httptools

from edge360.core.errors import RangeNotSatisfiable
from edge360.core.ranges import ByteRange, Multi, content_range, resolve_range

#: prepared header blocks and rewritten playlists kept at most (per listener)
MAX_PREPARED = 4096


@dataclass(slots=True)
class Request:
    """One parsed request head, as the answerer sees it."""

    method: str
    target: str  # the request target as sent ("/t/a.m3u8?sid=x")
    headers: list[tuple[str, str]]  # as sent, in order
    fields: dict[str, str]  # lower-cased names (the head has no repeated name)
    keep_alive: bool
    peer: str
    started: float  # time.monotonic() when the head was complete


@dataclass(slots=True)
class Answer:
    """What the fast path writes: status, header fields (each line CRLF-ended, Content-Length
    included; Date, Server and Connection are added here), and the body: in-memory bytes, or a
    span of a file. `done(sent, seconds)` runs once the body went to the kernel (sent = body
    bytes, 0 for HEAD); it is not called when the connection broke first."""

    status: int
    fields: bytes
    body: bytes | memoryview | None = None
    parts: Sequence[memoryview] | None = None  # a body in slices (of pieces), written in order
    file: tuple[str, int, int] | None = None  # (path, offset, count)
    done: Callable[[int, float], None] | None = None
    date: bool = True  # add Date (False: the fields carry one, as a stored answer may)
    server: bool = True  # add Server (likewise)


Answerer = Callable[[Request], Answer | None]


class Prepared:
    """A bounded LRU of prepared answers (header blocks, rewritten bodies)."""

    def __init__(self, limit: int = MAX_PREPARED) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._limit = limit

    def get(self, key: Any) -> Any:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = value
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


def encode_fields(headers: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("utf-8")


def plan_range(rng: str | None, length: int,
               max_ranges: int) -> tuple[int, int, int, bytes] | None:
    """(status, first byte, byte count, Content-Range field) as responses.serve plans it for a
    request without If-Range; None for what the fast path leaves to aiohttp (416, multipart)."""
    if rng is None:
        return 200, 0, length, b""
    try:
        plan = resolve_range(rng, length, max_ranges=max_ranges)
    except RangeNotSatisfiable:
        return None
    if isinstance(plan, Multi):
        return None
    if isinstance(plan, ByteRange):
        field = f"Content-Range: {content_range(plan, length)}\r\n".encode("latin-1")
        return 206, plan.start, plan.length, field
    return 200, 0, length, b""


class _Head:
    """httptools callbacks for one head."""

    __slots__ = ("complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        self.complete = True


_date_cache: list[Any] = [0, b""]


def date_field() -> bytes:
    """The Date field, formatted once a second (aiohttp does the same)."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
    return cast(bytes, _date_cache[1])




def parse_head(head: bytes, peer: str) -> Request | None:
    """One complete request head (ending in a blank line) as a Request, or None when the fast
    path must not touch it: bare-LF line ends, a head the parser refuses or that asks for an
    upgrade, HTTP other than 1.1, a repeated field, Connection tokens other than keep-alive or
    close."""
    return HeadParser()(head, peer)


class HeadParser:
    """parse_head with one httptools parser per connection: a parser that read a head completely
    and accepted it reads the next one; any other outcome replaces it."""

    __slots__ = ("_h", "_parser")

    def __init__(self) -> None:
        self._h = _Head()
        self._parser: httptools.HttpRequestParser | None = None

    def __call__(self, head: bytes, peer: str) -> Request | None:
        if head.count(b"\n") != head.count(b"\r\n"):
            return None  # bare LF line ends: aiohttp's parser decides what they mean
        h = self._h
        h.url, h.headers, h.complete = b"", [], False
        parser = self._parser
        if parser is None:
            parser = httptools.HttpRequestParser(h)
        self._parser = None
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        if not h.complete or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        fields = {name.lower(): value for name, value in h.headers}
        if len(fields) != len(h.headers):
            return None  # a repeated field: aiohttp refuses some, joins others
        connection = fields.get("connection", "keep-alive").lower()
        if connection not in ("keep-alive", "close"):
            return None  # other tokens (upgrade, hop-by-hop names): aiohttp's reading of them
        self._parser = parser
        return Request(parser.get_method().decode("latin-1"), h.url.decode("latin-1"),
                       h.headers, fields, connection == "keep-alive", peer, time.monotonic())
