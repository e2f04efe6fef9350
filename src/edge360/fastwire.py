"""The messages of the fast path: a parsed request head as the answerer sees it, the answer it
returns, and the Date field (formatted once a second). Parsing stays strict: anything the fast
path is unsure of parses to None, and the request goes to aiohttp (see fasthttp)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

import httptools


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
    file: tuple[str, int, int] | None = None  # (path, offset, count)
    done: Callable[[int, float], None] | None = None
    date: bool = True  # add Date (False: the fields carry one, as a stored answer may)
    server: bool = True  # add Server (likewise)


Answerer = Callable[[Request], Answer | None]


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
    if head.count(b"\n") != head.count(b"\r\n"):
        return None  # bare LF line ends: aiohttp's parser decides what they mean
    h = _Head()
    parser = httptools.HttpRequestParser(h)
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
    return Request(parser.get_method().decode("latin-1"), h.url.decode("latin-1"), h.headers,
                   fields, connection == "keep-alive", peer, time.monotonic())
