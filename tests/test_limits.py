"""Abuse limits on a real origin: per-address rates (429 + Retry-After), sessions opened per
address, the connection ceiling, the request-head timeout and the send timeout for stalled readers.

Servers run in-process with the listener `edge360 serve` listens with, on
127.0.0.1:0; clients are aiohttp and raw sockets. Every wait is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge360.config.schema import Config
from tests.fixtures.servers import guarded_server, make_config
from tests.fixtures.titles import add_files


def origin_config(media: Path, flags: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None) -> Config:
    return make_config({"origin.media": str(media), "server.port": 0, **(flags or {})}, env)


async def read_until_closed(reader: asyncio.StreamReader, limit: float = 15.0) -> bytes:
    """Everything the server sends until it closes (bounded in time and size)."""
    out = bytearray()
    async with asyncio.timeout(limit):
        while len(out) < 1 << 20:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def wait_for(pred: Any, limit: float = 15.0) -> None:
    """Poll `pred()` every 50 ms until true; fail after `limit` seconds."""
    for _ in range(int(limit / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_rate_limit_answers_429_with_retry_after(tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, {"limits.rate_per_ip": 0.01, "limits.rate_burst": 2,
                                     "server.trusted_proxies": ["127.0.0.1/32"]})
    async with guarded_server(cfg) as srv, aiohttp.ClientSession() as http:
        url = srv.base + "/tiny/v0/seg_000.ts"
        codes = []
        for _ in range(3):
            async with http.get(url) as r:
                codes.append(r.status)
                retry = r.headers.get("Retry-After")
                await r.read()
        assert codes == [200, 200, 429]
        # one token per 100 s: the wait is rounded up, never 0
        assert retry is not None and int(retry) == 100
        # monitoring is never throttled
        for path in ("/healthz", "/metrics"):
            async with http.get(srv.base + path) as r:
                assert r.status == 200
        # another client behind the trusted proxy has its own bucket
        async with http.get(url, headers={"X-Forwarded-For": "203.0.113.9"}) as r:
            assert r.status == 200
            assert await r.read() == (tiny_media / "tiny/v0/seg_000.ts").read_bytes()


async def test_sessions_opened_per_address_are_bounded_but_loopback_is_not(
        tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, {"sessions.per_ip_per_minute": 2,
                                     "server.trusted_proxies": ["127.0.0.1/32"]})
    remote = {"X-Forwarded-For": "198.51.100.7"}
    async with guarded_server(cfg) as srv, aiohttp.ClientSession() as http:
        url = srv.base + "/tiny/master.m3u8"
        codes = []
        for _ in range(3):
            async with http.get(url, headers=remote) as r:
                codes.append(r.status)
                await r.read()
        assert codes == [200, 200, 429]
        # two sessions opened (starting: playlists alone are no views), the third refused
        assert srv.node.tracker.starting == 2 and srv.node.tracker.views == 0
        # a viewer that already has its session keeps playing
        async with http.get(url + "?sid=abcdefgh12345678", headers=remote) as r:
            assert r.status == 200
        # a load test from this machine is many viewers on 127.0.0.1: never bounded
        for _ in range(5):
            async with http.get(url) as r:
                assert r.status == 200


async def test_connections_over_the_ceiling_are_refused_and_counted(tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, {"limits.max_connections": 2})
    async with guarded_server(cfg) as srv:
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            held.append((reader, writer))
        assert srv.node.counters.connections_open == 2
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = await read_until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in answer
        assert srv.node.counters.connections_open == 2
        for _, w in held:
            w.close()
        await wait_for(lambda: srv.node.counters.connections_open == 0)
        # room again: a new client is served
        async with aiohttp.ClientSession() as http, http.get(srv.base + "/healthz") as r:
            assert r.status == 200


async def test_slowloris_head_is_cut_off(tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, {"limits.header_timeout": 0.3})
    async with guarded_server(cfg) as srv:
        # a head that never ends
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nX-a: ")
        assert await read_until_closed(reader) == b""
        writer.close()
        # the same after one good request on a keep-alive connection
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        rest = await read_until_closed(reader)
        assert b"HTTP/1.1" not in rest  # only the first answer's body, no second answer
        writer.close()
        await wait_for(lambda: srv.node.counters.connections_open == 0)
        # a head sent in pieces that does end is served
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        for piece in (b"GET /healthz HT", b"TP/1.1\r\nHost: t\r", b"\nConnection: close\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
        assert (await read_until_closed(reader)).startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.fixture
def big_media(tiny_media: Path) -> Path:
    """tiny_media plus a 48 MiB segment, larger than any socket buffer on loopback."""
    add_files(tiny_media / "tiny", {"v0/big.ts": bytes(range(256)) * 4096 * 48})
    return tiny_media


async def test_stalled_reader_is_aborted_after_send_timeout(big_media: Path) -> None:
    cfg = origin_config(big_media, {"limits.send_timeout": 0.5})
    async with guarded_server(cfg) as srv:
        sock = await non_reader(srv.port, "/tiny/v0/big.ts")
        await wait_for(lambda: srv.node.counters.connections_open == 1)
        # the client never reads: the server must let go of the connection on its own
        await wait_for(lambda: srv.node.counters.connections_open == 0)
        sock.close()
        # and a reader that reads gets every byte
        async with aiohttp.ClientSession() as http, http.get(srv.base + "/tiny/v0/big.ts") as r:
            assert r.status == 200
            assert await r.read() == (big_media / "tiny/v0/big.ts").read_bytes()


async def test_stalled_reader_of_an_answer_written_at_once_is_aborted(tiny_media: Path) -> None:
    # a body under http.send.CHUNK goes out in one write, with no task to watch it: it is watched
    # until the reader took it all, and an idle keep-alive connection is left alone
    add_files(tiny_media / "tiny", {"v0/mid.ts": bytes(range(256)) * 1000})  # 256,000 bytes
    cfg = origin_config(tiny_media, {"limits.send_timeout": 0.5,
                                     "limits.keepalive_timeout": 600})
    async with guarded_server(cfg) as srv:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", srv.port)
        await healthz(idle_reader, idle_writer)
        sock = await non_reader(srv.port, "/tiny/v0/mid.ts")
        await wait_for(lambda: srv.node.counters.connections_open == 2)
        # the reader that stopped is let go; the idle keep-alive connection stays
        await wait_for(lambda: srv.node.counters.connections_open == 1)
        sock.close()
        await asyncio.sleep(1.0)  # two send timeouts: the idle one is still open
        assert srv.node.counters.connections_open == 1
        await healthz(idle_reader, idle_writer)
        idle_writer.close()


async def non_reader(port: int, path: str) -> socket.socket:
    """A client with a small receive window that asks for `path` and never reads the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sock.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


async def healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One keep-alive GET /healthz, its answer read whole."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)


async def test_oversized_head_is_refused_without_500(tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, {"limits.max_header_bytes": 2048})
    async with guarded_server(cfg) as srv:
        for head in (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(head)
            answer = await read_until_closed(reader)
            writer.close()
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 414, 431), answer[:200]
