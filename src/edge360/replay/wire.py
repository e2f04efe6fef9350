"""The replayer's lean HTTP/1.1 GET client: keep-alive pools per origin, answers read with
httptools (the connections and pools are in replay/wirepool.py).

Why not aiohttp here: its ClientSession spends ~250-330 µs of CPU per request (request building,
cookie jar, timeouts, StreamReader, response object), and a replayer core must carry 60,000 viewers
at 6 s pacing (10,000 requests a second), so well under 100 µs. A virtual viewer only GETs, so
this client does only that:

- one pool per origin (scheme, host, port), at most `limit` connections each, at most
  MAX_ORIGINS pools (an idle one makes room for a new origin);
- ONE loop timer per client (`_sweep`, every `tick` seconds while there is work) enforces the
  total and connect timeouts and ages out idle connections, instead of a timer or wait_for per
  await; a timeout therefore fires up to one tick late (a twentieth of the shorter timeout, at
  most half a second);
- redirects (301, 302, 303, 307, 308) are followed as aiohttp follows them, to any http(s) origin,
  the 10th answering one raising; https goes through `loop.create_connection(ssl=...)` with a
  default context; credentials in a URL become Basic authorization, as aiohttp sends them;
- the request carries Host, `Accept-Encoding: gzip` (the player gunzips playlists itself; nothing
  else it could decode is offered) and the caller's extra fields (Range).

A `Line` (`Client.line`) is one viewer's own keep-alive connection, as a real player holds one:
pools of one connection per origin, optionally from a chosen source address, that the viewer
closes when it leaves; the client's one timer sweeps a line's pool only while it has a request in
flight or waiting. Lines spread viewers over source addresses (each address pair has its own
~28,000 ephemeral ports); the shared pools stay for runs that want a bounded pool instead.

Errors are FetchError carrying the kind the player records, as aiohttp's exceptions mapped:
"timeout"; "connection" (refused, reset, closed before the answer's head: aiohttp's
ClientConnectionError); "client" (a malformed answer, a body cut short: ClientPayloadError, too
many redirects, a URL it cannot fetch).
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import ssl
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit

from edge360 import __version__
from edge360.replay.exchange import Answer, Exchange, FetchError
from edge360.replay.wirepool import Pool

MAX_REDIRECTS = 10
REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: origins a client holds pools for at most (an idle pool makes room for a new one)
MAX_ORIGINS = 32
_TAIL = f"Accept: */*\r\nAccept-Encoding: gzip\r\nUser-Agent: edge360-replay/{__version__}\r\n\r\n"
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
#: what may follow a URL's origin (its authority ends there: RFC 3986 §3.2)
_AFTER = ("/", "?", "#", "")
_SAFE = "!$%&'()*+,/:;=?@[]~"   # what a request target may carry unquoted (RFC 3986 pchar, query)

__all__ = ["Answer", "Client", "FetchError", "Getter", "Line"]


class Getter(Protocol):
    """What the player GETs through: this module's Client or an aiohttp session behind it."""

    async def get(self, url: str, headers: Mapping[str, str] | None = None, *,
                  keep_body: bool = True) -> Answer: ...


class Client:
    """Keep-alive pools per origin; `get` is the one request it makes. Use as an async context
    manager (or call `close`) so every connection is closed before the loop is."""

    def __init__(self, *, limit: int = 512, total_timeout: float = 30.0,
                 connect_timeout: float = 10.0, keepalive_s: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        """`clock` (the loop's time by default) is what deadlines are read against; the sweep
        still runs every `tick` real seconds."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit, self.total_timeout, self.connect_timeout = limit, total_timeout, connect_timeout
        self.keepalive_s = keepalive_s
        self.tick = max(0.005, min(0.5, total_timeout / 20, connect_timeout / 20))
        self.closed = False
        self._ssl = ssl_context
        self._pools: dict[str, Pool] = {}    # bounded by MAX_ORIGINS
        self._lines: set[Line] = set()       # bounded by the viewers playing
        self._watch: set[Pool] = set()       # lines' pools with a request in flight or waiting
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = clock

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def now(self) -> float:
        if self._clock is None:
            assert self._loop is not None
            self._clock = self._loop.time
        return self._clock()

    def line(self, local: str | None = None) -> Line:
        """A viewer's own connection (one per origin), from source address `local` if given."""
        line = Line(self, local)
        self._lines.add(line)
        return line

    def settled(self, pool: Pool) -> None:
        """The shared pools are always swept (there are few); a line's pool rests."""
        self._watch.discard(pool)

    def forget(self, line: Line) -> None:
        self._lines.discard(line)

    async def get(self, url: str, headers: Mapping[str, str] | None = None, *,
                  keep_body: bool = True, line: Line | None = None) -> Answer:
        """GET `url` (following redirects); raises FetchError. `headers` adds fields (Range);
        `line` sends it on that viewer's own connection instead of the shared pools."""
        if self.closed or (line is not None and line.closed):
            raise FetchError("connection", "client closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = self.now() + self.total_timeout
        extra = _fields(headers) if headers else ""
        for _ in range(MAX_REDIRECTS):
            pool, target = self._route(url, line)
            ex = Exchange(f"GET {target} HTTP/1.1\r\n{pool.fields}{extra}{_TAIL}".encode(),
                          keep_body, loop.create_future(), deadline)
            if line is not None:
                self._watch.add(pool)
            pool.submit(ex)
            if self._timer is None:
                self.arm()
            try:
                answer = await ex.future
            except asyncio.CancelledError:
                pool.abandon(ex)
                raise
            if answer.status not in REDIRECTS:
                return answer
            location = answer.header("location")
            if location is None:
                return answer            # aiohttp hands such a redirect back as it is
            url = urljoin(url, location)
        raise FetchError("client", f"{MAX_REDIRECTS} redirects")

    def arm(self) -> None:
        if self._timer is None and self._loop is not None and not self.closed:
            self._timer = self._loop.call_later(self.tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.now()
        busy = [pool.sweep(now) for pool in self._pools.values()]
        for pool in list(self._watch):
            if pool.sweep(now):
                busy.append(True)
            else:
                self._watch.discard(pool)
        if any(busy):
            self.arm()

    def _route(self, url: str, line: Line | None = None) -> tuple[Pool, str]:
        last = line.last if line is not None else None
        if last is not None and url.startswith(last[0]):
            n = len(last[0])
            if url[n:n + 1] in _AFTER:
                # the viewer's previous origin (nearly every request of a viewer): no regex
                return last[1], _request_target(url[n:])
        m = _ORIGIN.match(url)
        if m is None:
            raise FetchError("client", f"not an absolute URL: {url[:200]!r}")
        pool = (self._pools if line is None else line.pools).get(m.group(0))
        if pool is None:
            pool = self._pool(m.group(0), m.group(1).lower(), m.group(2), line)
        if line is not None:
            line.last = (m.group(0), pool)
        return pool, _request_target(url[m.end():])

    def _pool(self, key: str, scheme: str, netloc: str, line: Line | None) -> Pool:
        if scheme not in ("http", "https"):
            raise FetchError("client", f"cannot fetch {scheme}: URLs")
        try:
            parts = urlsplit(f"{scheme}://{netloc}")
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise FetchError("client", f"bad URL authority {netloc!r}: {exc}") from None
        if not host:
            raise FetchError("client", f"no host in {netloc!r}")
        default = 443 if scheme == "https" else 80
        port = port or default
        shown = f"[{host}]" if ":" in host else host
        if not shown.isascii():
            shown = shown.encode("idna").decode("ascii")
        fields = f"Host: {shown if port == default else f'{shown}:{port}'}\r\n"
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            fields += f"Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        pools = self._pools if line is None else line.pools
        if len(pools) >= MAX_ORIGINS:
            unused = [k for k, p in pools.items()
                      if not (p.pending or p.connecting or len(p.idle) < len(p.conns))]
            if not unused:
                raise FetchError("client", f"more than {MAX_ORIGINS} origins in use")
            pools.pop(unused[0]).close()
        owner: Client | Line = self if line is None else line
        pool = pools[key] = Pool(owner, host, port, tls, fields,
                                 None if line is None else line.local)
        return pool

    async def close(self) -> None:
        """Close every connection (answers in flight fail with "connection")."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pools = [*self._pools.values(), *(p for ln in self._lines for p in ln.pools.values())]
        self._pools, self._lines, self._watch = {}, set(), set()
        tasks = [t for pool in pools for t in pool.connecting]
        for pool in pools:
            pool.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        # let the transports run connection_lost (their sockets close there), bounded
        for _ in range(20):
            if not any(pool.conns for pool in pools):
                break
            await asyncio.sleep(0)


class Line:
    """One viewer's own keep-alive connection to each origin it fetches from (its pools hold at
    most one connection), kept until the viewer closes the line when it leaves."""

    limit = 1
    keepalive_s = math.inf           # the viewer holds it: it never ages out while the line lives

    def __init__(self, client: Client, local: str | None) -> None:
        self.client, self.local = client, local
        self.pools: dict[str, Pool] = {}     # bounded by MAX_ORIGINS
        #: the origin (as written before the path) and pool of its latest request
        self.last: tuple[str, Pool] | None = None
        self._closed = False

    @property
    def connect_timeout(self) -> float:
        return self.client.connect_timeout

    @property
    def closed(self) -> bool:
        return self._closed or self.client.closed

    def now(self) -> float:
        return self.client.now()

    def arm(self) -> None:
        self.client.arm()

    def settled(self, pool: Pool) -> None:
        self.client.settled(pool)

    def get(self, url: str, headers: Mapping[str, str] | None = None, *,
            keep_body: bool = True) -> Coroutine[Any, Any, Answer]:
        # the client's coroutine itself, not one awaiting it: one frame less for every answer
        # to pass through on its way back to the player
        return self.client.get(url, headers, keep_body=keep_body, line=self)

    def close(self) -> None:
        """The viewer left: close its connections (an answer in flight fails)."""
        self._closed = True
        for pool in self.pools.values():
            pool.close()
            self.client.settled(pool)
        self.pools = {}
        self.last = None
        self.client.forget(self)


def _request_target(rest: str) -> str:
    """The request target for what follows a URL's origin."""
    if "#" in rest:
        rest = rest.partition("#")[0]
    if not rest.startswith("/"):
        rest = "/" + rest
    if not (rest.isascii() and rest.isprintable()) or " " in rest:
        rest = quote(rest, safe=_SAFE)   # as aiohttp's yarl would send it
    return rest


def _fields(headers: Mapping[str, str]) -> str:
    out = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if out.count("\n") != len(headers) or out.count("\r") != len(headers):
        raise FetchError("client", "a header field holds a line break")
    return out
