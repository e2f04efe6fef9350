"""Reading HTTP/1.1 requests off a connection (RFC 9112) with httptools: each request head is
parsed once, into a Request that every layer above reads.

`RequestReader` is fed the bytes as they arrive, in whatever pieces the network cut them, and
queues complete requests. The limits hold whatever the write boundaries: a head larger than
`max_head` (counted while it arrives, and again from its parsed lines, so one big write and a
byte-by-byte trickle are refused alike) and a body larger than `max_body` raise WireError with
the status to answer (431, 413, 400) before the request is queued.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final
from urllib.parse import parse_qsl

import httptools

from edge360.core.errors import BadRequest, Edge360Error, HeadersTooLarge, PayloadTooLarge
from edge360.core.kinds import kind_of

#: fields a request may carry only once (RFC 9112 §3.2, §6.3): a repeat is refused
_SINGLE: Final = frozenset({"host", "content-length"})
#: request bodies are small here (admin JSON, passed API calls); more is refused with 413
MAX_BODY: Final = 1024 * 1024


class Request:
    """One request as every layer reads it: method, target (path and raw query), the header
    fields by lower-cased name with repeats comma-joined (RFC 9110 §5.3), the body, the
    client's address as the connection knows it (TCP peer or PROXY header) and when its head
    was complete (monotonic seconds)."""

    __slots__ = (
        "_kind",
        "_params",
        "_query",
        "body",
        "client",
        "fields",
        "keep_alive",
        "method",
        "path",
        "peer",
        "query_string",
        "started",
        "target",
        "tls",
        "version",
    )

    def __init__(self, method: str, target: str, fields: dict[str, str], version: str,
                 keep_alive: bool, peer: str, tls: bool = False) -> None:
        self.method = method
        self.target = target
        path, _, self.query_string = target.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
            rest = path.split("//", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        self.path = path
        self.fields = fields
        self.version = version
        self.keep_alive = keep_alive
        self.peer = peer
        self.tls = tls
        self.body = b""
        self.started = time.monotonic()
        self._query: list[tuple[str, str]] | None = None
        self._params: dict[str, str] | None = None
        self._kind: str | None = None
        #: the client's address once known (http.viewers.address_of)
        self.client: str | None = None

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query's (name, value) pairs, percent-decoded, in order (repeats kept)."""
        if self._query is None:
            self._query = parse_query(self.query_string)
        return self._query

    @property
    def kind(self) -> str:
        """The metric kind of the path (core.kinds: playlist, segment, other)."""
        if self._kind is None:
            self._kind = kind_of(self.path)
        return self._kind

    def param(self, name: str) -> str | None:
        """The first value of query parameter `name` (the first of a repeated name counts)."""
        return self.params().get(name)

    def params(self) -> dict[str, str]:
        """The query as a dict; where a name repeats, its first value."""
        if self._params is None:
            self._params = dict(reversed(self.query))
        return self._params


def parse_query(query: str) -> list[tuple[str, str]]:
    """A query's (name, value) pairs, as urllib.parse.parse_qsl(keep_blank_values=True) gives
    them; a plain query (no percent-escape, no "+", no ";") is split without it."""
    if not query:
        return []
    if "%" in query or "+" in query or ";" in query:
        return parse_qsl(query, keep_blank_values=True)
    out = []
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            out.append((name, value))
    return out


class WireError(Exception):
    """The bytes on the connection cannot be read as a request: answer `error` and close."""

    def __init__(self, error: Edge360Error) -> None:
        super().__init__(str(error))
        self.error = error


class RequestReader:
    """httptools callbacks for one connection: complete requests land in `ready`."""

    __slots__ = ("_fields", "_head_bytes", "_in_head", "_parsed", "_parser", "_request", "_url",
                 "begun", "max_body", "max_head", "peer", "ready", "tls")

    def __init__(self, peer: str, max_head: int, *, max_body: int = MAX_BODY,
                 tls: bool = False) -> None:
        self.peer = peer
        self.tls = tls
        self.max_head = max_head
        self.max_body = max_body
        self.ready: deque[Request] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._request: Request | None = None
        self._url = b""
        self._fields: dict[str, str] = {}
        self._parsed = 0  # bytes of the current head's field lines as parsed
        self._head_bytes = 0
        self._in_head = False
        self.begun = 0  # heads begun so far (a new one in a feed: its timer starts)

    @property
    def mid_message(self) -> bool:
        """A request has begun and is not complete yet (a head or a body still arriving)."""
        return self._in_head or self._request is not None

    def feed(self, data: bytes) -> None:
        """Parse `data`; raises WireError for what cannot be served (see the module docstring)."""
        if self._in_head or not self.mid_message:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            raise WireError(cause.error if isinstance(cause, WireError) else
                            BadRequest("bad request")) from None
        except httptools.HttpParserUpgrade:
            # an Upgrade we do not speak: the request is answered as plain HTTP, then the
            # connection closes (the bytes after it belong to another protocol)
            for request in self.ready:
                request.keep_alive = False
        except httptools.HttpParserError:
            raise WireError(BadRequest("bad request")) from None
        if self._in_head and self._head_bytes > self.max_head:
            raise WireError(HeadersTooLarge("request head too large"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self.begun += 1
        self._in_head = True
        self._url = b""
        self._fields = {}
        self._parsed = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.max_head:
            raise WireError(HeadersTooLarge("request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        # the hot part of reading a browser's head (a dozen lines): kept to one lookup per line
        # names are tokens (RFC 9110 §5.1, enforced by the parser): ASCII, so bytes.lower
        key = name.lower().decode("latin-1")
        fields = self._fields
        self._parsed += len(name) + len(value) + 4
        if key in fields:
            if key in _SINGLE:
                raise WireError(BadRequest(f"repeated {key}"))
            if self._parsed + len(self._url) > self.max_head:
                # checked before joining: thousands of repeats in one write would otherwise
                # copy an ever longer value each time (the limit holds at the head's end too)
                raise WireError(HeadersTooLarge("request head too large"))
            fields[key] = f"{fields[key]}, {value.decode('latin-1')}"
        else:
            fields[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._in_head = False
        self._head_bytes = 0
        fields = self._fields
        # the head as parsed: one that arrived in one piece never counted while arriving
        if self._parsed + len(self._url) > self.max_head:
            raise WireError(HeadersTooLarge("request head too large"))
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise WireError(BadRequest(f"HTTP/{version}"))
        if version == "1.1" and "host" not in fields:
            raise WireError(BadRequest("no Host"))  # RFC 9112 §3.2
        length = fields.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise WireError(PayloadTooLarge("request body too large"))
        self._request = Request(parser.get_method().decode("latin-1"),
                                self._url.decode("latin-1"), fields, version,
                                parser.should_keep_alive(), self.peer, self.tls)

    def on_body(self, body: bytes) -> None:
        request = self._request
        if request is not None:
            if len(request.body) + len(body) > self.max_body:
                raise WireError(PayloadTooLarge("request body too large"))
            request.body += body

    def on_message_complete(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            self.ready.append(request)
