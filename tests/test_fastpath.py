"""The fast path answers exactly as aiohttp does: the same request matrix against a server with
server.fastpath on and one with it off must agree on status, body and every header but Date (and
minted sids, compared by shape), and leave the same sessions and metrics behind. The fast
listener's own counters show which requests it really answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from edge360.config.schema import Config
from edge360.http.middleware import runner_options
from edge360.http.protocol import FastListener
from edge360.node.accesslog import AccessLog
from edge360.node.state import NODE
from edge360.run.app import create_app
from edge360.run.fastpath import parse_query
from edge360.run.server import start_site
from tests.edgekit import make_title, origin
from tests.servers import make_config

Exchange = tuple[int, list[tuple[str, str]], bytes]
SID = "viewer0123"
_MINTED = re.compile(r"sid=[A-Za-z0-9_-]{22}\b")
_DIGEST = re.compile(r'-[0-9a-f]{12}((?:-gz)?")$')


@contextlib.asynccontextmanager
async def node(flags: dict[str, Any]) -> AsyncIterator[tuple[str, FastListener | None, Any]]:
    """A server as `edge360 serve` listens (GuardedSite, fast path per server.fastpath)."""
    async with node_of_config(make_config(flags)) as running:
        yield running


@contextlib.asynccontextmanager
async def node_of_config(config: Config) -> AsyncIterator[tuple[str, FastListener | None, Any]]:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2,
                           keepalive_timeout=config.limits.keepalive_timeout,
                           **runner_options(app[NODE]))
    await runner.setup()
    site, fast = await start_site(runner, app, config, host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{site.port}", fast, app[NODE]
    finally:
        await runner.cleanup()
        if fast is not None:
            await fast.wait_drained(2)


@contextlib.asynccontextmanager
async def pair(flags: dict[str, Any]) -> AsyncIterator[tuple[tuple[str, FastListener, Any],
                                                             tuple[str, Any]]]:
    async with node({**flags, "server.fastpath": True}) as on, \
            node({**flags, "server.fastpath": False}) as off:
        assert on[1] is not None and off[1] is None
        yield (on[0], on[1], on[2]), (off[0], off[2])


def normal(ex: Exchange, minted: bool) -> Exchange:
    """Date dropped; Age kept only as present; a minted sid and a multipart boundary (random)
    compared by their shape."""
    status, headers, body = ex
    boundary = next((v.split("boundary=")[1] for k, v in headers
                     if k.lower() == "content-type" and "boundary=" in v), None)
    if boundary is not None:  # random per multipart answer
        headers = [(k, v.replace(boundary, "B")) for k, v in headers]
        body = body.replace(boundary.encode(), b"B")
    out = []
    for name, raw_value in headers:
        value = raw_value
        if name.lower() == "date":
            continue
        if name.lower() == "age":
            value = "int" if value.isdigit() else value
        if minted and name.lower() == "etag":
            value = _DIGEST.sub(r"-DIGEST\1", value)
        out.append((name, value))
    if minted:
        body = _MINTED.sub("sid=MINTED", body.decode("latin-1")).encode("latin-1")
    return status, out, body


async def fetch(s: aiohttp.ClientSession, url: str, method: str = "GET",
                headers: dict[str, str] | None = None) -> Exchange:
    async with s.request(method, url, headers=headers or {}, allow_redirects=False,
                         auto_decompress=False) as r:
        return r.status, list(r.raw_headers_decoded()), await r.read()


def _decoded(r: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.raw_headers]


aiohttp.ClientResponse.raw_headers_decoded = _decoded  # type: ignore[attr-defined]


async def raw(base: str, requests: list[tuple[str, str, str]]) -> list[Exchange]:
    """Send (method, target, extra header lines) pipelined in one write on one connection (the
    last closes it) and parse the answers in order."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    for i, (method, target, extra) in enumerate(requests):
        close = "Connection: close\r\n" if i == len(requests) - 1 else ""
        data += f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}{close}\r\n".encode()
    writer.write(data)
    out: list[Exchange] = []
    try:
        for method, _, _ in requests:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            body = b"" if method == "HEAD" or status == 304 else \
                await asyncio.wait_for(reader.readexactly(length), 10)
            out.append((status, headers, body))  # type: ignore[arg-type]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return out


def metrics_of(text: str) -> dict[str, float]:
    names = ("edge360_requests_total", "edge360_egress_bytes_total", "edge360_cache_requests_total",
             "edge360_cache_bytes_total", "edge360_sessions_active", "edge360_views_total",
             "edge360_prefetches_total", "edge360_late_segments_total")
    out = {}
    for line in text.splitlines():
        if line.startswith(names):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def same_figures(s: aiohttp.ClientSession, on: str, off: str,
                       since: tuple[dict[str, float], dict[str, float]] | None = None) -> None:
    """Sessions (/api/stats) and the counters (/metrics) agree after the same traffic (the
    counters' growth `since` earlier figures, when given)."""
    a, b = await figures(s, on), await figures(s, off)
    assert a[0] == b[0]
    base_a, base_b = since or ({}, {})
    grew_a = {k: v - base_a.get(k, 0) for k, v in a[1].items()}
    grew_b = {k: v - base_b.get(k, 0) for k, v in b[1].items()}
    assert {k: (grew_a.get(k), grew_b.get(k)) for k in grew_a.keys() | grew_b.keys()
            if grew_a.get(k) != grew_b.get(k)} == {}


async def figures(s: aiohttp.ClientSession, base: str) -> tuple[dict[str, Any], dict[str, float]]:
    async with s.get(base + "/api/stats") as r:
        stats = await r.json()
    async with s.get(base + "/metrics") as r:
        text = await r.text()
    keep = ("sessions_active", "sessions_peak", "views_total")
    return {k: stats[k] for k in keep}, metrics_of(text)


RANGES = ["bytes=0-99", "bytes=100-", "bytes=-500", "bytes=0-0", "bytes=5-999999999",
          "bytes=999999999-", "bytes=-0", "bytes=abc", "bytes=0-9,20-29", "items=0-5"]


def matrix(etag_of: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """(method, target, headers): playlists with and without sid/token/CMCD, segments whole and
    ranged, HEAD, conditionals, OPTIONS, 404s."""
    seg, big = "/demo/v0/seg_001.ts", "/demo/br/stream.ts"
    cmcd = "CMCD=" + "sid%3D%22" + "cmcdviewer1" + "%22"
    out: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/demo/master.m3u8", {}),
        ("GET", f"/demo/master.m3u8?sid={SID}", {}),
        ("GET", f"/demo/v0/index.m3u8?sid={SID}&token=abc.def", {}),
        ("GET", f"/demo/v0/index.m3u8?sid={SID}", {"Accept-Encoding": "gzip, deflate"}),
        ("GET", "/demo/v1/index.m3u8?sid=bad", {}),
        ("GET", f"/demo/v1/index.m3u8?{cmcd}", {}),
        ("GET", "/demo/v1/index.m3u8", {"CMCD-Session": 'sid="cmcdheader1"'}),
        ("HEAD", f"/demo/master.m3u8?sid={SID}", {}),
        ("GET", f"{seg}?sid={SID}", {}),
        ("HEAD", f"{seg}?sid={SID}", {}),
        ("GET", f"{big}?sid={SID}", {}),
        ("HEAD", big, {}),
        ("GET", f"{seg}?sid={SID}", {"If-None-Match": etag_of.get(seg, '"x"')}),
        ("GET", seg, {"If-Modified-Since": "Sun, 06 Nov 2044 08:49:37 GMT"}),
        ("GET", seg, {"Range": "bytes=0-9", "If-Range": etag_of.get(seg, '"x"')}),
        ("GET", seg, {"Range": "bytes=0-9", "If-Range": '"other"'}),
        ("OPTIONS", seg, {"Origin": "http://player"}),
        ("GET", "/demo/v0/nope.ts", {}),
        ("GET", "/nope/master.m3u8", {}),
        ("GET", seg, {"Connection": "keep-alive", "User-Agent": "player/1"}),
    ]
    for rng in RANGES:
        out.append(("GET", f"{seg}?sid={SID}", {"Range": rng}))
        out.append(("GET", big, {"Range": rng}))
    return out


async def run_matrix(on: str, off: str, items: list[tuple[str, str, dict[str, str]]]) -> None:
    # a connection per request: one handed to aiohttp stays there (see the keep-alive test)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for method, target, headers in items:
            a = await fetch(s, on + target, method, headers)
            b = await fetch(s, off + target, method, headers)
            minted = "sid=" + SID not in target and "cmcd" not in (target + str(headers)).lower()
            assert normal(a, minted) == normal(b, minted), (method, target, headers)


async def test_origin_answers_identically(tmp_path: Path) -> None:
    make_title(tmp_path)
    flags = {"server.role": "origin", "origin.media": str(tmp_path)}
    async with pair(flags) as ((on, fast, _), (off, _)), aiohttp.ClientSession() as s:
        seg = (await fetch(s, off + "/demo/v0/seg_001.ts"))[1]
        await fetch(s, on + "/demo/v0/seg_001.ts")  # the same traffic on both
        etags = {"/demo/v0/seg_001.ts": dict(seg)["ETag"]}
        before = fast.stats.answered
        await run_matrix(on, off, matrix(etags))
        assert fast.stats.answered - before >= 20  # the plain hits went the fast way
        # a fast hit, then a refusal: one answered, one handed over
        answered, handed = fast.stats.answered, fast.stats.handed_off
        await raw(on, [("GET", "/demo/v0/seg_000.ts", "")])
        assert (fast.stats.answered, fast.stats.handed_off) == (answered + 1, handed)
        await raw(on, [("GET", "/demo/v0/seg_000.ts", "If-None-Match: *\r\n")])
        assert (fast.stats.answered, fast.stats.handed_off) == (answered + 1, handed + 1)
        await raw(off, [("GET", "/demo/v0/seg_000.ts", "")])
        await raw(off, [("GET", "/demo/v0/seg_000.ts", "If-None-Match: *\r\n")])
        await same_figures(s, on, off)


PIPELINE = [("GET", f"/demo/master.m3u8?sid={SID}", ""), ("HEAD", "/demo/v0/seg_000.ts", ""),
            ("GET", "/demo/br/stream.ts", "Range: bytes=-70000\r\n"),
            ("GET", "/demo/v1/seg_002.ts", ""),
            ("OPTIONS", "/demo/v1/seg_001.ts", ""),  # handed over: the rest is aiohttp's
            ("GET", "/demo/v1/seg_003.ts", ""), ("GET", "/demo/../demo/master.m3u8", ""),
            ("GET", "/demo/v1/%2e%2e/master.m3u8", ""), ("GET", "/demo/v1/seg_000.ts", "")]


async def test_origin_pipelined_and_keep_alive_mixes(tmp_path: Path) -> None:
    make_title(tmp_path)
    flags = {"server.role": "origin", "origin.media": str(tmp_path)}
    async with pair(flags) as ((on, fast, _), (off, _)):
        answered = fast.stats.answered
        a, b = await raw(on, PIPELINE), await raw(off, PIPELINE)
        assert [normal(x, False) for x in a] == [normal(x, False) for x in b]
        assert [x[0] for x in a] == [200, 200, 206, 200, 204, 200, 400, 400, 200]
        assert fast.stats.answered == answered + 4
        # traversal and odd paths alone on fresh connections: refused alike
        for target in ("/demo/../demo/master.m3u8", "/demo//master.m3u8", "/.hidden/x.ts",
                       "/demo/v0/seg_000.ts?sid=%41bc", "/demo/master.m3u8?a&b"):
            assert [normal(x, True) for x in await raw(on, [("GET", target, "")])] == \
                [normal(x, True) for x in await raw(off, [("GET", target, "")])], target
        # one client connection: fast, fast, handed over (404), then answered by aiohttp
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            for target in ("/demo/v0/seg_000.ts", f"/demo/master.m3u8?sid={SID}",
                           "/demo/nope.ts", "/demo/v0/seg_001.ts"):
                assert normal(await fetch(s, on + target), False) == \
                    normal(await fetch(s, off + target), False)


async def test_edge_hits_answer_identically(tmp_path: Path) -> None:
    make_title(tmp_path)
    async with origin(tmp_path) as o:
        flags = {"server.role": "edge", "edge.upstreams": [o], "edge.health_interval": 30}
        async with pair(flags) as ((on, fast, n_on), (off, n_off)), aiohttp.ClientSession() as s:
            # the first round fills both caches (misses go to aiohttp on both): segments before
            # the playlists that name them, so no prefetch races with it
            warm = [*(f"/demo/v{r}/seg_{i:03d}.ts" for r in (0, 1) for i in range(4)),
                    "/demo/br/stream.ts", "/demo/master.m3u8", "/demo/v0/index.m3u8",
                    "/demo/v1/index.m3u8", "/demo/br/index.m3u8"]
            for path in warm:
                for base in (on, off):
                    assert (await fetch(s, base + path + f"?sid={SID}"))[0] == 200
            for _ in range(500):  # bounded: a few loopback fetches
                if not any(len(n.role_state.coalescer) or n.role_state.prefetcher.inflight
                           for n in (n_on, n_off)):
                    break
                await asyncio.sleep(0.01)
            since = ((await figures(s, on))[1], (await figures(s, off))[1])
            seg = (await fetch(s, off + "/demo/v0/seg_001.ts"))[1]
            await fetch(s, on + "/demo/v0/seg_001.ts")  # the same traffic on both
            etags = {"/demo/v0/seg_001.ts": dict(seg)["ETag"]}
            answered = fast.stats.answered
            await run_matrix(on, off, matrix(etags))
            assert fast.stats.answered - answered >= 20
            hit = await fetch(s, on + "/demo/v0/seg_002.ts")
            assert dict(hit[1])["X-Cache"] == "HIT"
            await fetch(s, off + "/demo/v0/seg_002.ts")
            a, b = await raw(on, PIPELINE), await raw(off, PIPELINE)
            assert [normal(x, False) for x in a] == [normal(x, False) for x in b]
            await same_figures(s, on, off, since)


async def test_guards_hold_on_the_fast_path(tmp_path: Path) -> None:
    make_title(tmp_path)
    flags = {"server.role": "origin", "origin.media": str(tmp_path), "server.fastpath": True,
             "limits.max_connections": 2, "limits.header_timeout": 0.3,
             "limits.keepalive_timeout": 0.3}
    async with node(flags) as (base, fast, state):
        assert fast is not None
        port = int(base.rsplit(":", 1)[1])
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        busy = await asyncio.wait_for(r3.read(), 10)
        assert busy.startswith(b"HTTP/1.1 503")  # over the ceiling: shed
        w2.write(b"GET /demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        w1.write(b"GET /demo/v0/seg_000.ts HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        assert await asyncio.wait_for(r1.read(), 10) == b""  # closed by the head timeout
        answer = await asyncio.wait_for(r2.readuntil(b"#EXTM3U"), 10)
        assert answer.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(r2.read(), 10)  # then idle: closed by the keep-alive timeout
        for w in (w1, w2, w3):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        for _ in range(200):  # bounded: the loop sees both closes within a few turns
            if state.counters.connections_open == 0:
                break
            await asyncio.sleep(0.01)
        assert state.counters.connections_open == 0


@pytest.mark.parametrize(("query", "expected"), [
    ("", []), ("sid=abc", [("sid", "abc")]), ("a=1&a=2", [("a", "1"), ("a", "2")]),
    ("a=", [("a", "")]), ("a", None), ("&a=1", None), ("=1", None), ("a=b=c", [("a", "b=c")])])
def test_plain_query_parse_agrees_with_yarl(query: str, expected: Any) -> None:
    from yarl import URL
    assert parse_query(query) == expected
    if expected is not None:
        assert list(URL("/x?" + query).query.items()) == expected


PIECED_RANGES = ["bytes=0-99", "bytes=65000-70000", "bytes=65536-131071", "bytes=65535-65536",
                 "bytes=100-", "bytes=-70000", "bytes=0-0", "bytes=599999-", "bytes=5-999999999",
                 "bytes=999999999-", "bytes=0-9,70000-70009", "bytes=abc"]


async def test_edge_pieced_hits_answer_identically(tmp_path: Path) -> None:
    """Objects held in 64 KiB pieces: whole, ranges across piece boundaries, HEAD; a piece
    missing from memory sends the request to aiohttp on both."""
    make_title(tmp_path)
    async with origin(tmp_path) as o:
        flags = {"server.role": "edge", "edge.upstreams": [o], "edge.health_interval": 30,
                 "edge.piece_bytes": 65536, "edge.prefetch_depth": 0}
        async with pair(flags) as ((on, fast, n_on), (off, n_off)), aiohttp.ClientSession() as s:
            paths = ["/demo/br/stream.ts", "/demo/v1/seg_000.ts", "/demo/v0/seg_001.ts"]
            for path in paths:
                for base in (on, off):
                    assert (await fetch(s, base + path + f"?sid={SID}"))[0] == 200
            since = ((await figures(s, on))[1], (await figures(s, off))[1])
            items: list[tuple[str, str, dict[str, str]]] = []
            for path in paths:
                items += [("GET", f"{path}?sid={SID}", {}), ("HEAD", f"{path}?sid={SID}", {}),
                          ("HEAD", path, {"Range": "bytes=70000-"}),
                          ("GET", path, {"Cache-Control": "max-age=3600"}),
                          ("GET", path, {"Cache-Control": "no-cache"})]
                items += [("GET", f"{path}?sid={SID}", {"Range": r}) for r in PIECED_RANGES]
            answered = fast.stats.answered
            await run_matrix(on, off, items)
            assert fast.stats.answered - answered >= 30
            # piece 1 of the single-file rendition leaves memory on both: aiohttp answers
            for n in (n_on, n_off):
                state = n.role_state
                obj = state.store.peek("/demo/br/stream.ts")
                assert obj is not None and obj.pieced
                assert state.store.memory.pop(obj.piece_key("/demo/br/stream.ts", 1)) is not None
            answered = fast.stats.answered
            await run_matrix(on, off, [("GET", "/demo/br/stream.ts", {"Range": "bytes=0-70000"}),
                                       ("GET", "/demo/br/stream.ts", {"Range": "bytes=0-99"})])
            assert fast.stats.answered == answered + 1
            a, b = await raw(on, PIPELINE), await raw(off, PIPELINE)
            assert [normal(x, False) for x in a] == [normal(x, False) for x in b]
            await same_figures(s, on, off, since)
            # past every freshness deadline (VOD max-age is a year): aiohttp answers on both
            for n in (n_on, n_off):
                real = n.clock
                n.clock = lambda real=real: real() + 2 * 31536000
            answered = fast.stats.answered
            await run_matrix(on, off, [("GET", "/demo/v1/seg_000.ts", {}),
                                       ("HEAD", "/demo/br/stream.ts", {"Range": "bytes=0-9"})])
            assert fast.stats.answered == answered


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                    target: str, extra: str = "", body: str = "") -> Exchange:
    """One request on an open keep-alive connection, its answer read whole."""
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n{body}".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    status = int(lines[0].split()[1])
    body = b"" if method == "HEAD" or status == 304 else \
        await asyncio.wait_for(reader.readexactly(length), 10)
    return status, headers, body  # type: ignore[return-value]


async def test_edge_connection_comes_back_after_a_miss(tmp_path: Path) -> None:
    """A viewer's keep-alive connection that missed once (aiohttp fetched) is taken back by the
    fast path at its next request; a request with a body keeps it with aiohttp for good. The
    answers match the server without the fast path and the connection count stays exact."""
    make_title(tmp_path)
    async with origin(tmp_path) as o:
        flags = {"server.role": "edge", "edge.upstreams": [o], "edge.health_interval": 30,
                 "edge.prefetch_depth": 0}
        async with pair(flags) as ((on, fast, n_on), (off, n_off)):
            async def conversation(base: str, state: Any,
                                   stats: Any) -> tuple[list[Exchange], list[tuple[int, ...]]]:
                port = int(base.rsplit(":", 1)[1])
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                out, seen = [], []
                steps = [("GET", "/demo/v0/seg_000.ts", ""),   # miss: aiohttp
                         ("GET", "/demo/v0/seg_000.ts", ""),   # hit: fast path again
                         ("GET", "/demo/v0/seg_001.ts", ""),   # miss
                         ("HEAD", "/demo/v0/seg_001.ts", ""),  # hit
                         ("GET", "/demo/v0/seg_000.ts", "Range: bytes=0-99\r\n"),
                         ("POST", "/demo/v0/x", "Content-Length: 2\r\n\r\nhi"),  # body: 405
                         ("GET", "/demo/v0/seg_000.ts", "")]   # stays with aiohttp
                for method, target, extra in steps:
                    head, _, body = extra.partition("\r\n\r\n")  # POST: head lines + body
                    out.append(await _exchange(reader, writer, method, target,
                                               head + "\r\n" if body else extra, body))
                    seen.append((stats.answered, stats.taken_back, stats.handed_off)
                                if stats else ())
                    assert state.counters.connections_open == 1
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                return out, seen

            a, seen = await conversation(on, n_on, fast.stats)
            b, _ = await conversation(off, n_off, None)
            assert [normal(x, False) for x in a] == [normal(x, False) for x in b]
            assert [x[0] for x in a] == [200, 200, 200, 200, 206, 405, 200]
            answered = [s[0] - seen[0][0] for s in seen]
            taken = [s[1] - seen[0][1] for s in seen]
            handed = [s[2] - seen[0][2] for s in seen]
            # miss (handed), hit (taken back, answered), miss (handed), HEAD and Range hits
            # (taken back once, answered twice), POST (handed), GET after it (aiohttp's)
            assert answered == [0, 1, 1, 2, 3, 3, 3]
            assert taken == [0, 1, 1, 2, 2, 2, 2]
            assert handed == [0, 0, 1, 1, 1, 2, 2]
            for n in (n_on, n_off):
                for _ in range(200):  # bounded: the loop sees the close within a few turns
                    if n.counters.connections_open == 0:
                        break
                    await asyncio.sleep(0.01)
                assert n.counters.connections_open == 0


async def test_access_log_lines_agree(tmp_path: Path) -> None:
    """With server.access_log the fast path stays on and writes the same lines aiohttp's
    middleware writes for the same requests (timestamps and durations aside)."""
    make_title(tmp_path)
    flags = {"server.role": "origin", "origin.media": str(tmp_path), "server.access_log": True}
    async with pair(flags) as ((on, fast, n_on), (off, n_off)):
        logs = []
        for n in (n_on, n_off):
            r, w = os.pipe()
            os.set_blocking(r, False)
            n.access_log = AccessLog(n.counters, fd=w)
            logs.append((r, w, n.access_log))
        items = [("GET", f"/demo/master.m3u8?sid={SID}&token=secret-value",
                  {"User-Agent": "player/1"}),
                 ("GET", "/demo/v0/seg_000.ts", {"Range": "bytes=0-99"}),
                 ("HEAD", f"/demo/v0/seg_001.ts?sid={SID}", {}),
                 ("GET", "/demo/v0/nope.ts", {})]
        answered = fast.stats.answered
        await run_matrix(on, off, items)
        assert fast.stats.answered - answered == 3  # the 404 is aiohttp's on both
        lines = []
        for r, w, log in logs:
            log.close()
            os.close(w)
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            os.close(r)
            lines.append([{k: v for k, v in orjson.loads(x).items() if k not in ("ts", "ms")}
                          for x in data.splitlines()])
        assert lines[0] == lines[1]
        assert [x["status"] for x in lines[0]] == [200, 206, 200, 404]
        assert lines[0][0]["query"] == f"sid={SID}&token=***"
        assert 100 < lines[0][1]["bytes"] < 1000 and lines[0][0]["ua"] == "player/1"


async def test_signed_urls_stay_on_the_fast_path(tmp_path: Path) -> None:
    """With auth.required a request whose token verifies is answered fast, exactly as aiohttp
    answers it (the token carried into the playlist's URIs); a missing, tampered, expired or
    out-of-scope token is aiohttp's 403 on both."""
    import time

    from edge360.security import tokens as auth_mod
    make_title(tmp_path)
    keys = "k1:first-secret-0123456789"

    def tok(scope: str = "/demo/", ttl: int = 300) -> str:
        return auth_mod.sign(auth_mod.parse_keys(keys), scope=scope,
                             expires=int(time.time()) + ttl)
    good = tok()
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    flags = {"server.role": "origin", "origin.media": str(tmp_path)}
    env = {"EDGE360_AUTH_REQUIRED": "true", "EDGE360_AUTH_KEYS": keys}
    config_on = make_config({**flags, "server.fastpath": True}, env)
    config_off = make_config({**flags, "server.fastpath": False}, env)
    assert config_on.auth.required
    async with node_of_config(config_on) as (on, fast, _), \
            node_of_config(config_off) as (off, _, _):
        assert fast is not None
        items: list[tuple[str, str, dict[str, str]]] = [
            ("GET", f"/demo/master.m3u8?sid={SID}&token={good}", {}),
            ("GET", f"/demo/v0/index.m3u8?sid={SID}&token={good}", {}),
            ("GET", f"/demo/v0/seg_001.ts?sid={SID}&token={good}", {"Range": "bytes=0-99"}),
            ("HEAD", f"/demo/v0/seg_001.ts?token={good}", {}),
        ]
        answered = fast.stats.answered
        await run_matrix(on, off, items)
        assert fast.stats.answered - answered == len(items)
        refused: list[tuple[str, str, dict[str, str]]] = [
            ("GET", f"/demo/v0/seg_001.ts?sid={SID}", {}),
            ("GET", f"/demo/v0/seg_001.ts?token={forged}", {}),
            ("GET", f"/demo/v0/seg_001.ts?token={tok(ttl=-60)}", {}),
            ("GET", f"/demo/v0/seg_001.ts?token={tok(scope='/other/')}", {}),
        ]
        answered = fast.stats.answered
        await run_matrix(on, off, refused)
        assert fast.stats.answered == answered
        async with aiohttp.ClientSession() as s:
            for _, target, _ in refused:
                assert (await fetch(s, on + target))[0] == 403


async def test_rate_limited_addresses_are_charged_once(tmp_path: Path) -> None:
    """With a per-address rate the fast path stays on and charges each request once, whichever
    path answers it: the same requests get the same 200s, 404 and 429s on both servers."""
    make_title(tmp_path)
    flags = {"server.role": "origin", "origin.media": str(tmp_path),
             "limits.rate_per_ip": 0.5, "limits.rate_burst": 4}
    seg = f"/demo/v0/seg_001.ts?sid={SID}"
    # hit (fast), 404 (charged by the fast path, refunded, charged by aiohttp), hit, hit: the
    # burst of 4 is spent; then over the rate: 429 from aiohttp on both, fast or not
    steps = [seg, "/demo/v0/nope.ts", seg, seg, seg, "/demo/v0/nope.ts", seg]
    async with pair(flags) as ((on, fast, _), (off, _)):
        answered = fast.stats.answered
        statuses = []
        for base in (on, off):
            conn = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=conn) as s:
                statuses.append([(await fetch(s, base + target))[0] for target in steps])
        assert statuses[0] == statuses[1] == [200, 404, 200, 200, 429, 429, 429]
        assert fast.stats.answered - answered == 3
