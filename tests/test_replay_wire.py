"""The replayer's lean GET client (replay/wire.py, replay/wirepool.py) against real servers.

`RawServer` is a tiny HTTP/1.1 server on asyncio streams (127.0.0.1:0) that writes each answer
byte for byte as the test path asks, so every framing and every misbehaviour is on the wire exactly
(Content-Length, chunked, close-delimited, cut short, silent, `Connection: close`), and counts the
connections it accepted and how many were open at once. Where aiohttp is the reference (error
kinds, redirects), the same request also goes through an aiohttp session behind the player's
interface (replay/aioget.py) and both must agree. A real edge360 origin serves a real title too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from edge360.replay.aioget import SessionGetter
from edge360.replay.model import Viewer
from edge360.replay.player import PlayerConfig, Stats, VirtualPlayer
from edge360.replay.truth import Rule
from edge360.replay.wire import Client, FetchError, Getter
from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import origin
from tests.fixtures.titles import make_title

PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\ns0.ts\n#EXT-X-ENDLIST\n"


class RawServer:
    """Answers by path; `opened` counts accepted connections, `most` the most open at once."""

    def __init__(self) -> None:
        self.opened = 0
        self.open_now = 0
        self.most = 0
        self.seen: list[tuple[str, dict[str, str]]] = []   # (target, lower-cased fields)
        self.release = asyncio.Event()                     # lets the silent answers go
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [target for target, _ in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self.open_now += 1
        self.most = max(self.most, self.open_now)
        try:
            for n in range(1000):            # answers per connection, bounded
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                fields = dict(line.split(": ", 1) for line in lines[1:] if line)
                self.seen.append((target, {k.lower(): v for k, v in fields.items()}))
                if not await self._answer(target, fields, writer, n):
                    return
        finally:
            self.open_now -= 1
            writer.close()

    async def _answer(self, target: str, fields: dict[str, str], w: asyncio.StreamWriter,
                      n: int) -> bool:
        """Write the answer for `target`; False closes the connection."""
        path = target.partition("?")[0]
        if path == "/cl":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif path == "/slow":
            await asyncio.sleep(0.02)       # so concurrent requests overlap
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        elif path == "/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nhel\r\n4\r\nlo w\r\n4\r\norld\r\n0\r\n\r\n")
        elif path == "/until-close":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread me to the end")
            await w.drain()
            return False
        elif path == "/cut":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            await w.drain()
            return False
        elif path == "/cut-chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
            await w.drain()
            return False
        elif path == "/headless":
            return False                    # closes without a byte of answer
        elif path == "/silent":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 10)
            return False
        elif path == "/bye":
            # says close but keeps serving: only a client honouring it opens a new connection
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye")
        elif path == "/gzip":
            body = gzip.compress(PLAYLIST)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
                    b"application/vnd.apple.mpegurl\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body))
        elif path == "/range":
            echo = fields.get("Range", "none").encode()
            w.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(echo), echo))
        elif path == "/racy":
            # the first request is answered; the next one on this connection finds it closed,
            # as when a server's keep-alive timeout strikes just as the client reuses it
            if n > 0:
                return False
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nracy")
        elif path == "/interim":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        elif path.startswith("/to/"):
            # /to/N/<rest>: a 302 to <rest> (relative or absolute) N times, then serves it
            _, _, hops, rest = path.split("/", 3)
            left = int(hops)
            if left > 1:
                where = f"/to/{left - 1}/{rest}"
            else:
                where = rest.replace("~", "/") if rest.startswith("http") else "/" + rest
            w.write(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 5\r\n\r\nmoved"
                    % where.encode())
        elif path == "/loop":
            w.write(b"HTTP/1.1 301 Moved\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
        elif path == "/nolocation":
            w.write(b"HTTP/1.1 302 Found\r\nContent-Length: 2\r\n\r\nno")
        elif path == "/garbage":
            w.write(b"HTTP/1.1 2x0 Nope\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        return True


@contextlib.asynccontextmanager
async def both() -> AsyncIterator[tuple[Client, Getter]]:
    """The lean client and aiohttp behind the same interface, set up as the replay sets them."""
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
    async with Client(limit=8) as lean, aiohttp.ClientSession(auto_decompress=False,
                                                              timeout=timeout) as session:
        yield lean, SessionGetter(session)


async def kind_of(getter: Getter, url: str) -> str:
    with pytest.raises(FetchError) as caught:
        await getter.get(url)
    return caught.value.kind


async def until(ready: Callable[[], bool]) -> None:
    for _ in range(1000):                    # bounded: 10 s
        if ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])      # closed again: nothing listens there


async def test_keep_alive_reuses_one_connection() -> None:
    async with RawServer() as srv, Client() as http:
        for _ in range(5):
            got = await http.get(srv.url("/cl"))
            assert (got.status, got.body, got.size) == (200, b"hello", 5)
    assert srv.opened == 1 and srv.paths() == ["/cl"] * 5
    host = srv.seen[0][1]
    assert host["host"] == f"127.0.0.1:{srv.port}" and host["accept-encoding"] == "gzip"


async def test_the_pool_bound_holds_under_concurrency() -> None:
    async with RawServer() as srv, Client(limit=2) as http:
        answers = await asyncio.gather(*(http.get(srv.url("/slow")) for _ in range(20)))
    assert [a.body for a in answers] == [b"slow"] * 20
    assert srv.most <= 2 and srv.opened == 2 and len(srv.seen) == 20


async def test_bodies_by_length_chunked_and_close() -> None:
    async with RawServer() as srv, Client() as http:
        cl = await http.get(srv.url("/cl"))
        chunked = await http.get(srv.url("/chunked"))
        closed = await http.get(srv.url("/until-close"))
        counted = await http.get(srv.url("/chunked"), keep_body=False)
        interim = await http.get(srv.url("/interim"))
    assert cl.body == b"hello" and chunked.body == b"hello world"
    assert closed.body == b"read me to the end" and closed.header("content-type") == "text/plain"
    assert counted.body is None and counted.size == 11      # a segment: counted, not kept
    assert interim.status == 200 and interim.body == b"ok"  # a 1xx answer is skipped


async def test_gzipped_playlist_stays_raw_and_range_passes_through() -> None:
    async with RawServer() as srv, Client() as http:
        got = await http.get(srv.url("/gzip"))
        ranged = await http.get(srv.url("/range?sid=x"), {"Range": "bytes=10-19"})
    assert got.header("Content-Encoding") == "gzip" and got.body is not None
    assert gzip.decompress(got.body) == PLAYLIST
    assert ranged.status == 206 and ranged.body == b"bytes=10-19"
    assert srv.seen[-1][0] == "/range?sid=x" and srv.seen[-1][1]["range"] == "bytes=10-19"


async def test_connection_close_is_honoured() -> None:
    async with RawServer() as srv, Client() as http:
        for _ in range(3):
            assert (await http.get(srv.url("/bye"))).body == b"bye"
    assert srv.opened == 3


async def test_a_reused_connection_closed_by_the_server_is_retried_once() -> None:
    async with RawServer() as srv, Client() as http:
        assert (await http.get(srv.url("/racy"))).body == b"racy"
        assert (await http.get(srv.url("/racy"))).body == b"racy"
    assert srv.paths() == ["/racy"] * 3 and srv.opened == 2


async def test_error_kinds_agree_with_aiohttp() -> None:
    async with RawServer() as srv, both() as (lean, aio):
        cases = {"/cut": "client", "/cut-chunked": "client", "/headless": "connection",
                 "/garbage": "client"}
        for path, kind in cases.items():
            assert await kind_of(lean, srv.url(path)) == kind, path
            assert await kind_of(aio, srv.url(path)) == kind, path
        refused = f"http://127.0.0.1:{refused_port()}/cl"
        assert await kind_of(lean, refused) == await kind_of(aio, refused) == "connection"


async def test_a_silent_server_times_out() -> None:
    async with RawServer() as srv, Client(total_timeout=0.3) as http:
        assert await kind_of(http, srv.url("/silent")) == "timeout"
        # the timed-out connection was cut; the client goes on working
        srv.release.set()
        assert (await http.get(srv.url("/cl"))).body == b"hello"


async def test_waiting_for_a_busy_pool_counts_towards_the_timeout() -> None:
    clock = FakeClock(0.0)
    async with RawServer() as srv, Client(limit=1, total_timeout=5, clock=clock) as http:
        first = asyncio.ensure_future(http.get(srv.url("/silent")))
        queued = asyncio.ensure_future(http.get(srv.url("/cl")))
        await until(lambda: bool(srv.seen))
        clock.now = 10.0                    # both past their deadline: the next sweep sees it
        got = await asyncio.wait_for(asyncio.gather(first, queued, return_exceptions=True), 10)
        assert await kind_of(http, "") == "client"          # not a URL at all
    assert all(isinstance(e, FetchError) and e.kind == "timeout" for e in got)
    assert "no connection free" in str(got[1])
    assert srv.paths() == ["/silent"] and srv.opened == 1
    # a report tells the two timeouts apart, in a worker and after the parent merged it
    stats, parent = Stats(rule=Rule(30, None)), Stats(rule=Rule(30, None))
    for e in got:
        assert isinstance(e, FetchError)
        stats.error(e.kind, e.detail)
    parent.merge(stats.to_wire())
    assert parent.errors == {"timeout": 2}
    assert parent.error_details == {"timeout: no complete answer in time": 1,
                                    "timeout: no connection free in time": 1}


def test_error_details_stay_bounded() -> None:
    stats = Stats(rule=Rule(30, None))
    for i in range(100):
        stats.error("connection", f"cannot connect: reason {i}")
    assert stats.errors == {"connection": 100}
    assert len(stats.error_details) == 33 and stats.error_details["connection: other"] == 68


async def test_redirects_are_followed_as_aiohttp_follows_them() -> None:
    async with RawServer() as srv, RawServer() as other, both() as (lean, aio):
        elsewhere = other.url("/cl").replace("/", "~")
        for getter in (lean, aio):
            relative = await getter.get(srv.url("/to/3/cl"))
            assert (relative.status, relative.body) == (200, b"hello")
            across = await getter.get(srv.url(f"/to/2/{elsewhere}"))
            assert (across.status, across.body) == (200, b"hello")
            bare = await getter.get(srv.url("/nolocation"))
            assert (bare.status, bare.body) == (302, b"no")
            assert await kind_of(getter, srv.url("/loop")) == "client"
        hops = srv.paths()
        # the same requests both ways, so the same number of hops before "too many redirects"
        assert hops[:len(hops) // 2] == hops[len(hops) // 2:]
        assert hops.count("/loop") == 2 * 10
        assert other.paths() == ["/cl", "/cl"]


async def test_cancelled_requests_leave_the_pool_usable() -> None:
    async with RawServer() as srv, Client(limit=1) as http:
        stuck = asyncio.ensure_future(http.get(srv.url("/silent")))
        queued = asyncio.ensure_future(http.get(srv.url("/cl")))
        await until(lambda: bool(srv.seen))
        queued.cancel()
        stuck.cancel()
        await asyncio.gather(stuck, queued, return_exceptions=True)
        assert (await http.get(srv.url("/cl"))).body == b"hello"
    assert srv.paths() == ["/silent", "/cl"]


async def test_a_player_plays_a_real_origin_through_the_lean_client(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    async with origin(tmp_path / "media") as base, Client(limit=4) as http:
        stats = Stats(rule=Rule(30, None))
        config = PlayerConfig(master_url=f"{base}/demo/master.m3u8", speed=1000.0, loop=False,
                              seed=3)
        # 600 s of watch at speed 1000 is 0.6 s real: the 16 s title plays out first, and a
        # loaded machine still has time to fetch the master and media playlists (60 s, 60 ms
        # real, was not always enough for both under the full suite)
        await asyncio.wait_for(VirtualPlayer(http, Viewer(0, 0.0, 600.0, 0.0), config,
                                             stats).run(), 60)
    assert stats.errors == {} and stats.requests >= 3 and stats.played_s > 0
    assert stats.bytes > 0 and len(stats.records) == 1


async def https_case(cert: tuple[Path, Path]) -> None:
    """A 4 MiB body and a range over TLS, one connection; an untrusted certificate refused."""
    big = bytes(range(256)) * 16384
    peers: set[object] = set()

    async def handle(request: web.Request) -> web.Response:
        peers.add(request.transport)
        return web.Response(body=big[:request.http_range.stop] if request.http_range.stop
                            else big, status=206 if request.http_range.stop else 200)
    app = web.Application()
    app.router.add_get("/big.ts", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(str(cert[0]), str(cert[1]))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/big.ts"
    try:
        trusted = ssl.create_default_context(cafile=str(cert[0]))
        async with Client(ssl_context=trusted) as http:
            whole = await http.get(url, keep_body=False)
            part = await http.get(url, {"Range": "bytes=0-999"})
        assert (whole.status, whole.size, whole.body) == (200, len(big), None)
        assert (part.status, part.body) == (206, big[:1000])
        assert len(peers) == 1
        async with Client() as http:
            assert await kind_of(http, url) == "connection"     # its own TLS stack refuses
    finally:
        await runner.cleanup()


async def test_https_with_a_trusted_certificate(cert: tuple[Path, Path]) -> None:
    await https_case(cert)


def test_https_on_uvloop(cert: tuple[Path, Path]) -> None:
    uvloop.run(https_case(cert))


@pytest.mark.parametrize("case", [
    test_keep_alive_reuses_one_connection, test_the_pool_bound_holds_under_concurrency,
    test_bodies_by_length_chunked_and_close,
    test_gzipped_playlist_stays_raw_and_range_passes_through,
    test_connection_close_is_honoured,
    test_a_reused_connection_closed_by_the_server_is_retried_once,
    test_error_kinds_agree_with_aiohttp, test_a_silent_server_times_out,
    test_waiting_for_a_busy_pool_counts_towards_the_timeout,
    test_redirects_are_followed_as_aiohttp_follows_them,
    test_cancelled_requests_leave_the_pool_usable,
], ids=lambda case: case.__name__.removeprefix("test_"))
def test_the_same_on_uvloop(case: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The replayer runs on uvloop, whose transports differ (connection_made comes later)."""
    uvloop.run(case())


def test_a_player_on_uvloop(tmp_path: Path) -> None:
    uvloop.run(test_a_player_plays_a_real_origin_through_the_lean_client(tmp_path))


async def test_a_line_from_a_source_address_leaves_the_port_to_connect() -> None:
    """A viewer's line bound to a source address connects from it, and the port is chosen by
    connect() (IP_BIND_ADDRESS_NO_PORT), whose search stays cheap with many connections open;
    a refused connect fails as a connection error and leaves no socket behind."""
    async with RawServer() as srv, Client() as http:
        line = http.line("127.0.0.2")
        assert (await line.get(srv.url("/cl"))).body == b"hello"
        (pool,) = line.pools.values()
        (conn,) = pool.conns
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockname()[0] == "127.0.0.2"
        assert sock.getsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24))
        line.close()
        refused = http.line("127.0.0.2")
        assert await kind_of(refused, f"http://127.0.0.1:{refused_port()}/x") == "connection"
        assert not any(p.conns or p.connecting for p in refused.pools.values())
        refused.close()


async def test_a_connect_that_hangs_times_out_saying_where() -> None:
    """A listener whose accept queue is full drops SYNs, so connect() hangs: the line's connect
    times out at connect_timeout, and the error says it hung in connect()."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)                   # never accepted: a queue of one, then SYNs are dropped
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        async with Client(connect_timeout=0.3, total_timeout=5) as http:
            line = http.line("127.0.0.2")
            with pytest.raises(FetchError) as failed:
                await asyncio.wait_for(line.get(f"http://127.0.0.1:{port}/x"), 5)
            assert failed.value.kind == "timeout"
            assert failed.value.detail == "connect timed out in connect()"
            line.close()
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_a_line_routes_each_url_to_its_own_origin() -> None:
    """A viewer's line remembers the origin of its last request (no parse per request), and
    still sends every URL to the origin it names: another origin, the same host with a longer
    port, an origin with no path, a query, a fragment."""
    async with RawServer() as one, RawServer() as two, Client() as http:
        line = http.line()
        assert (await line.get(one.url("/cl"))).body == b"hello"
        assert (await line.get(two.url("/cl#frag"))).body == b"hello"
        assert (await line.get(one.url("/cl?a=1"))).body == b"hello"
        assert (await line.get(f"http://127.0.0.1:{two.port}")).status == 404
        assert (await line.get(f"http://127.0.0.1:{two.port}?b=2")).status == 404
        # the same host and a port the remembered one is a prefix of: not the remembered origin
        assert await kind_of(line, f"http://127.0.0.1:{one.port}0/cl") in ("client", "connection")
        assert one.paths() == ["/cl", "/cl?a=1"]
        assert two.paths() == ["/cl", "/", "/?b=2"]
        assert one.opened == two.opened == 1
        line.close()
