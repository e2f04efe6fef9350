"""The one protocol of the content plane, on the wire: limits that hold whatever the write
boundaries, pipelined requests answered in order with exact framing, request bodies (plain and
chunked), the keep-alive timeout, and the same bytes whether a body goes out from memory, by the
kernel's sendfile, or through TLS (a differential test of the body senders, on the default
asyncio loop in process and on uvloop in an `edge360 serve` process)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fixtures.edges import edge, fake_upstream
from tests.fixtures.servers import make_config, running_app, start_process
from tests.fixtures.titles import make_title

Answer = tuple[int, dict[str, str], bytes]


@contextlib.asynccontextmanager
async def origin_node(media: Path, **flags: Any) -> AsyncIterator[tuple[str, int]]:
    config = make_config({"server.role": "origin", "origin.media": str(media), **flags})
    async with running_app(config) as url:
        yield url, int(url.rsplit(":", 1)[1])


async def exchange(port: int, chunks: list[bytes], answers: int,
                   heads: tuple[str, ...] = ()) -> list[Answer]:
    """Send `chunks` (each its own write) on one connection, then read `answers` answers;
    `heads` names the requests (by index, "HEAD") whose answers carry no body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    out: list[Answer] = []
    try:
        for i in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:] if ln)}
            no_body = (i < len(heads) and heads[i] == "HEAD") or status in (204, 304)
            length = 0 if no_body else int(fields.get("content-length", "0"))
            body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            out.append((status, fields, body))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return out


async def closed_after(port: int, data: bytes, *, byte_by_byte: bool) -> tuple[int, bool]:
    """Send `data` in one write or one byte per write; (status of the answer, closed after)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):  # the server may stop reading a refused head
            if byte_by_byte:
                for i in range(len(data)):
                    writer.write(data[i:i + 1])
                    if i % 64 == 0:
                        await writer.drain()
            else:
                writer.write(data)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split()[1])
        length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n")
                           if ln.lower().startswith(b"content-length")), b"0"))
        await reader.readexactly(length)
        rest = await asyncio.wait_for(reader.read(), 10)
        return status, rest == b""
    finally:
        writer.close()


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["one-write", "byte-by-byte"])
async def test_the_head_limit_holds_whatever_the_write_boundaries(
        tiny_media: Path, byte_by_byte: bool) -> None:
    """limits.max_header_bytes on every path: a head over it answers 431 and the connection
    closes, in one write as much as byte by byte (10,000 headers in one write once got 200)."""
    async with origin_node(tiny_media, **{"limits.max_header_bytes": 2048}) as (_, port):
        many = b"".join(b"X-%d: v\r\n" % i for i in range(400))  # ~3.5 KB of fields
        head = b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
        assert await closed_after(port, head, byte_by_byte=byte_by_byte) == (431, True)
        long_line = b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 3000 + \
            b"\r\n\r\n"
        assert await closed_after(port, long_line, byte_by_byte=byte_by_byte) == (431, True)
        # and a head just under the limit is served, byte by byte too
        fine = b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert (await closed_after(port, fine, byte_by_byte=byte_by_byte))[0] == 200


async def test_pipelined_requests_are_answered_in_order_with_exact_framing(
        tiny_media: Path) -> None:
    seg = (tiny_media / "tiny" / "v0" / "seg_000.ts").read_bytes()
    async with origin_node(tiny_media) as (_, port):
        first = await exchange(port, [b"GET /tiny/v0/seg_000.ts HTTP/1.1\r\nHost: x\r\n\r\n"], 1)
        etag = first[0][1]["etag"]
        requests = [
            ("GET", "/tiny/v0/seg_000.ts", ""),
            ("HEAD", "/tiny/v0/seg_000.ts", ""),
            ("GET", "/tiny/nope.ts", ""),
            ("GET", "/tiny/v0/seg_000.ts", "Range: bytes=10-19\r\n"),
            ("GET", "/tiny/v0/seg_000.ts", f"If-None-Match: {etag}\r\n"),
            ("POST", "/tiny/v0/seg_000.ts", "Content-Length: 5\r\n"),
            ("GET", "/tiny/v0/seg_000.ts", "Range: bytes=0-0,5-5\r\n"),
            ("GET", "/healthz", "Connection: close\r\n"),
        ]
        data = b"".join(f"{m} {p} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
                        + (b"hello" if m == "POST" else b"") for m, p, extra in requests)
        got = await exchange(port, [data], len(requests), tuple(m for m, _, _ in requests))
    statuses = [status for status, _, _ in got]
    assert statuses == [200, 200, 404, 206, 304, 405, 206, 200]
    assert got[0][2] == seg and got[1][1]["content-length"] == str(len(seg))
    assert got[3][2] == seg[10:20] and got[3][1]["content-range"] == f"bytes 10-19/{len(seg)}"
    assert got[6][1]["content-type"].startswith("multipart/byteranges")
    assert seg[0:1] in got[6][2] and got[7][1]["connection"] == "close"


async def test_a_request_cut_at_every_byte_is_served(tiny_media: Path) -> None:
    async with origin_node(tiny_media) as (_, port):
        request = b"GET /tiny/master.m3u8?sid=viewer0001 HTTP/1.1\r\nHost: x\r\n\r\n"
        got = await exchange(port, [request[i:i + 1] for i in range(len(request))], 1)
        assert got[0][0] == 200 and b"#EXT-X-STREAM-INF" in got[0][2]


async def test_request_bodies_plain_and_chunked_reach_the_upstream() -> None:
    seen: list[bytes] = []

    async def upstream(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        return web.Response(status=201, body=b"made")

    async with fake_upstream(upstream) as (up, _), \
            edge([up], **{"edge.pass_methods": ["POST"]}) as e:
        port = int(e.rsplit(":", 1)[1])
        plain = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        chunked = (b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        got = await exchange(port, [plain + chunked], 2)
    assert [g[0] for g in got] == [201, 201] and [g[2] for g in got] == [b"made"] * 2
    assert seen == [b"hello", b"abcdefg"]


async def test_a_body_too_large_is_refused_with_413(tiny_media: Path) -> None:
    async with origin_node(tiny_media) as (_, port):
        status, closed = await closed_after(
            port, b"POST /admin/purge HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
            byte_by_byte=False)
        assert (status, closed) == (413, True)


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(
        tiny_media: Path) -> None:
    async with origin_node(tiny_media, **{"limits.keepalive_timeout": 0.3}) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                          if ln.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()


async def test_memory_sendfile_and_tls_send_the_same_bytes(
        tmp_path: Path, cert: tuple[Path, Path]) -> None:
    """An 8 MiB segment three ways: from an origin's file by sendfile (an `edge360 serve`
    process: uvloop where it runs on it), from an edge's memory tier, and from a TLS origin
    (chunks read in a thread): same status, framing and bytes; ranges too."""
    media = tmp_path / "media"
    data = os.urandom(8 * 1024 * 1024 + 7)
    make_title(media, extra={"v0/big.ts": data})
    crt, key = cert
    plain = start_process(["serve", "--port", "0", "--media", str(media)])
    tls = start_process(["serve", "--port", "0", "--media", str(media)],
                        {"EDGE360_SERVER_TLS_CERT": str(crt), "EDGE360_SERVER_TLS_KEY": str(key)})
    ctx = ssl.create_default_context(cafile=str(crt))
    try:
        async with edge([plain.base]) as e, aiohttp.ClientSession() as s:
            bodies = {}
            for name, base in (("sendfile", plain.base), ("memory", e), ("tls", tls.base)):
                for rng in (None, "bytes=1000000-5000000", "bytes=-7"):
                    headers = {"Range": rng} if rng else {}
                    async with s.get(base + "/demo/v0/big.ts", headers=headers,
                                     ssl=ctx if name == "tls" else None) as r:
                        body = await r.read()
                        bodies[(name, rng)] = (r.status, hashlib.sha256(body).hexdigest())
                if name == "memory":  # the first answer was the miss: ask again for the hit
                    async with s.get(base + "/demo/v0/big.ts") as r:
                        assert r.headers["X-Cache"] == "HIT"
                        bodies[("memory", None)] = (r.status,
                                                    hashlib.sha256(await r.read()).hexdigest())
        for rng, want in ((None, data), ("bytes=1000000-5000000", data[1000000:5000001]),
                          ("bytes=-7", data[-7:])):
            expected = (200 if rng is None else 206, hashlib.sha256(want).hexdigest())
            for name in ("sendfile", "memory", "tls"):
                assert bodies[(name, rng)] == expected, (name, rng)
    finally:
        plain.stop()
        tls.stop()
