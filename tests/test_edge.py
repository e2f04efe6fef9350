"""The edge over loopback: a real origin and a real edge chained, and hostile fake upstreams."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import edge, fake_upstream, get, metric, origin
from tests.fixtures.servers import make_config, running_app
from tests.fixtures.titles import Rendition, make_title

ADMIN = {"EDGE360_ADMIN_TOKEN": "adm1n"}
AUTH = {"Authorization": "Bearer adm1n"}


async def test_chain_hit_miss_age_via_and_playlist_rewrite(tmp_path: Path) -> None:
    files = make_title(tmp_path)
    async with origin(tmp_path) as o, edge([o]) as e, aiohttp.ClientSession() as s:
        st, h, body = await get(s, e + "/demo/master.m3u8")
        assert (st, h["X-Cache"], h["Via"]) == (200, "MISS", "1.1 edge360")
        assert h["Cache-Control"].startswith("private")
        sid = re.search(r"sid=([A-Za-z0-9_-]+)", body.decode())
        assert sid is not None and "v0/index.m3u8?sid=" in body.decode()
        st, h, body2 = await get(s, e + f"/demo/master.m3u8?sid={sid.group(1)}")
        assert h["X-Cache"] == "HIT" and "Age" in h and body2 == body  # one copy, per viewer
        st, h, b = await get(s, e + "/demo/v1/seg_002.ts")
        assert (st, h["X-Cache"], b) == (200, "MISS", files["v1/seg_002.ts"])
        assert "Age" not in h and h["Access-Control-Allow-Origin"] == "*"
        st, h, b = await get(s, e + "/demo/v1/seg_002.ts", {"If-None-Match": h["ETag"]})
        assert (st, h["X-Cache"]) == (304, "HIT")
        st, h, b = await get(s, e + "/demo/v1/seg_002.ts")
        assert h["X-Cache"] == "HIT" and int(h["Age"]) >= 0 and b == files["v1/seg_002.ts"]
        async with s.get(e + "/api/stats") as r:
            stats = await r.json()
        assert stats["views_total"] >= 1
        assert await metric(s, e, "edge360_cache_requests_total") >= 5


async def test_herd_costs_one_upstream_request_and_streams(tmp_path: Path) -> None:
    release = asyncio.Event()
    body = bytes(range(256)) * 800  # 204800 bytes

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60", "ETag": '"h"'})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:1000])
        await asyncio.wait_for(release.wait(), 30)
        await resp.write(body[1000:])
        return resp

    async with fake_upstream(slow) as (u, fake), edge([u]) as e, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        first: list[asyncio.Future[bytes]] = []

        async def client() -> bytes:
            async with s.get(e + "/t/herd.ts") as r:
                assert r.headers["X-Cache"] == "MISS"
                got = await r.content.readany()
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(got)
                first.append(fut)
                return got + await r.content.read()

        herd = [asyncio.ensure_future(client()) for _ in range(50)]
        for _ in range(300):  # bounded: until every client saw its first bytes
            if len(first) == 50:
                break
            await asyncio.sleep(0.05)
        assert len(first) == 50 and not release.is_set()
        release.set()
        results = await asyncio.wait_for(asyncio.gather(*herd), 30)
        assert all(r == body for r in results)
        assert fake.count("/t/herd.ts") == 1
        assert await metric(s, e, "edge360_coalesced_waiters_total") == 49


async def test_truncated_body_cuts_client_and_is_not_stored() -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"x" * 40_000)
        assert request.transport is not None
        request.transport.close()
        return resp

    async with fake_upstream(broken) as (u, fake), edge([u]) as e, \
            aiohttp.ClientSession() as s:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(e + "/t/cut.ts") as r:
                    await r.read()
        assert fake.count("/t/cut.ts") == 2  # nothing stored: the second is a miss again
        assert await metric(s, e, 'edge360_upstream_requests_total{code="truncated"}') >= 2


async def test_content_range_mismatch_never_stored() -> None:
    async def liar(request: web.Request) -> web.StreamResponse:
        return web.Response(status=206, body=b"y" * 100, headers={
            "Content-Range": "bytes 5-104/1000", "Cache-Control": "max-age=60"})

    async with fake_upstream(liar) as (u, fake), edge([u], ADMIN) as e, \
            aiohttp.ClientSession() as s:
        for _ in range(2):
            st, _h, _b = await get(s, e + "/t/big.ts", {"Range": "bytes=0-99"})
            assert st == 502
        assert fake.count("/t/big.ts") == 2
        async with s.get(e + "/admin/cache?path=/t/big.ts", headers=AUTH) as r:
            assert (await r.json())["tiers"] == []
        assert await metric(s, e, 'edge360_upstream_requests_total{code="invalid"}') >= 2


async def test_viewer_params_never_reach_upstream_nor_the_key() -> None:
    async def seg(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"seg", headers={"Cache-Control": "max-age=60"})

    async with fake_upstream(seg) as (u, fake), \
            edge([u], {"EDGE360_PEER_TOKEN": "peer"}, **{"edge.cache_key_params": "*"}) as e, \
            aiohttp.ClientSession() as s:
        for sid in ("abcdefgh1", "abcdefgh2"):
            st, h, _ = await get(s, e + f"/t/a.ts?q=1&sid={sid}&token=tok&CMCD=sid%3D%22z%22")
            assert st == 200
        assert [p for _, p, _h in fake.seen] == ["/t/a.ts?q=1"]  # second was a HIT
        assert h["X-Cache"] == "HIT"
        headers = fake.seen[0][2]
        assert headers["CDN-Loop"] == "edge360" and headers["Authorization"] == "Bearer peer"


async def test_stale_if_error_with_upstream_stopped() -> None:
    clock = FakeClock(1_000_000.0)

    async def short(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"fresh bytes", headers={"Cache-Control": "max-age=5"})

    upstream = fake_upstream(short)
    u, _fake = await upstream.__aenter__()
    stopped = False
    try:
        config = make_config({"server.role": "edge", "edge.upstreams": [u],
                              "edge.stale_while_revalidate": 0, "edge.retries": 0,
                              "edge.health_interval": 30})
        async with running_app(config, clock=clock) as e, \
                aiohttp.ClientSession() as s:
            assert (await get(s, e + "/t/s.ts"))[1]["X-Cache"] == "MISS"
            await upstream.__aexit__(None, None, None)  # the upstream stops
            stopped = True
            clock.advance(60)  # well past max-age=5, within stale-if-error (3600)
            st, h, b = await get(s, e + "/t/s.ts")
            assert (st, h["X-Cache"], b) == (200, "STALE", b"fresh bytes")
            assert int(h["Age"]) >= 60
            clock.advance(7200)  # past stale-if-error: the error shows
            st, h, b = await get(s, e + "/t/s.ts")
            assert st == 502
    finally:
        if not stopped:
            await upstream.__aexit__(None, None, None)


RANGE_CASES: list[dict[str, str]] = [
    {}, {"Range": "bytes=0-0"}, {"Range": "bytes=0-99"}, {"Range": "bytes=100-"},
    {"Range": "bytes=-500"}, {"Range": "bytes=65530-65545"}, {"Range": "bytes=599990-"},
    {"Range": "bytes=600000-"}, {"Range": "bytes=-0"}, {"Range": "bytes=5-1"},
    {"Range": "bytes=0-10,20-30"}, {"Range": "bytes=0-5,3-9"}, {"Range": "items=0-5"},
    {"Range": "bytes=0-10,200000-200010,-5"}, {"Range": "bytes=1-", "If-Range": '"nope"'},
    {"If-None-Match": "ETAG"}, {"If-None-Match": '"other"'}, {"If-Match": '"other"'},
    {"Range": "bytes=10-20", "If-Range": "ETAG"}, {"If-Modified-Since": "LM"},
    {"Range": "bytes=70000-140000"},
]


def _normalise(body: bytes, headers: CIMultiDict[str]) -> bytes:
    m = re.search(r"boundary=(\S+)", headers.get("Content-Type", ""))
    return body.replace(m.group(1).encode(), b"B") if m else body


@pytest.mark.parametrize("path", ["/demo/br/stream.ts", "/demo/v0/seg_001.ts"])
async def test_range_matrix_edge_answers_like_origin(tmp_path: Path, path: str) -> None:
    make_title(tmp_path)
    async with origin(tmp_path) as o, \
            edge([o], ADMIN, **{"edge.piece_bytes": 65536}) as e, aiohttp.ClientSession() as s:
        _, oh, _ = await get(s, o + path)
        for case in RANGE_CASES:
            headers = {k: v.replace("ETAG", oh["ETag"]).replace("LM", oh["Last-Modified"])
                       for k, v in case.items()}
            want = await get(s, o + path, headers)
            async with s.post(e + "/admin/purge", json={"path": path}, headers=AUTH) as r:
                assert r.status == 200
            for temperature in ("cold", "warm"):
                got = await get(s, e + path, headers)
                assert got[0] == want[0], (case, temperature)
                assert got[1].get("Content-Range") == want[1].get("Content-Range"), case
                assert _normalise(got[2], got[1]) == _normalise(want[2], want[1]), \
                    (case, temperature)


async def test_eviction_with_small_memory_still_serves_right_bytes(tmp_path: Path) -> None:
    files = make_title(tmp_path)
    async with origin(tmp_path) as o, edge([o], **{"edge.cache_memory_bytes": 1 << 20,
                                                   "edge.piece_bytes": 65536}) as e, \
            aiohttp.ClientSession() as s:
        for _ in range(2):
            for rel, data in sorted(files.items()):
                st, _h, b = await get(s, e + f"/demo/{rel}")
                assert (st, b) == (200, data), rel
        assert await metric(s, e, 'edge360_cache_evictions_total{tier="memory"}') > 0
        assert await metric(s, e, 'edge360_cache_size_bytes{tier="memory"}') <= 1 << 20


async def test_admin_purge_warm_cache_and_token(tmp_path: Path) -> None:
    files = make_title(tmp_path)
    async with origin(tmp_path) as o, edge([o], ADMIN) as e, aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with s.post(e + "/admin/purge", json={"prefix": "/demo/"},
                              headers=headers) as r:
                assert r.status == 403
        async with s.post(e + "/admin/purge", data=b"{not json", headers=AUTH) as r:
            assert r.status == 400
        async with s.post(e + "/admin/warm", json={"playlist": "/demo/master.m3u8"},
                          headers=AUTH) as r:
            assert r.status == 200
            queued = (await r.json())["queued"]
        assert queued == 3 + 2 * 4  # master, two media playlists, eight segments
        for _ in range(200):  # bounded wait for the background warm-up
            async with s.get(e + "/admin/cache?path=/demo/v1/seg_003.ts", headers=AUTH) as r:
                if (await r.json())["tiers"]:
                    break
            await asyncio.sleep(0.05)
        _st, h, b = await get(s, e + "/demo/v1/seg_003.ts")
        assert (h["X-Cache"], b) == ("HIT", files["v1/seg_003.ts"])
        async with s.post(e + "/admin/purge", json={"prefix": "/demo/v1/"}, headers=AUTH) as r:
            assert (await r.json())["purged"] >= 5
        _st, h, b = await get(s, e + "/demo/v1/seg_003.ts")
        assert h["X-Cache"] == "MISS"
    async with origin(tmp_path) as o, edge([o]) as e, aiohttp.ClientSession() as s, \
            s.post(e + "/admin/warm", json={"prefix": "/demo/"}, headers=AUTH) as r:
        assert r.status == 403  # no admin token configured: nobody gets in


async def test_refusals_carry_x_cache(tmp_path: Path) -> None:
    """X-Cache on every content response of the edge, refusals included (docs/HTTP.md)."""
    make_title(tmp_path)
    async with origin(tmp_path) as o, edge([o]) as e, aiohttp.ClientSession() as s:
        st, _, _ = await get(s, e + "/demo/v1/seg_002.ts")
        assert st == 200
        st, h, _ = await get(s, e + "/demo/v1/seg_002.ts", {"Range": "bytes=99999999-"})
        assert (st, h["X-Cache"]) == (416, "HIT")
        st, h, _ = await get(s, e + "/demo/nope.ts")
        assert st == 404 and h["X-Cache"] in ("MISS", "HIT")


async def test_a_slow_reader_of_a_cached_segment_is_a_late_segment(tmp_path: Path) -> None:
    """The send of a whole cached segment is timed to its end: a reader slower than the segment's
    duration counts in edge360_late_segments_total (rebuffer risk)."""
    size = 12_000_000  # beyond what the kernel's socket buffers absorb at once
    make_title(tmp_path, "slow", [Rendition("v0", 1, size, duration=0.05, bandwidth=1,
                                            segment="seg.ts")], byteranges=None)
    async with origin(tmp_path) as o, edge([o], {"EDGE360_EDGE_PIECE_BYTES": "64MiB"}) as e, \
            aiohttp.ClientSession() as s:
        assert (await get(s, e + "/slow/v0/index.m3u8"))[0] == 200
        assert (await get(s, e + "/slow/v0/seg.ts"))[0] == 200  # now cached whole
        before = await metric(s, e, "edge360_late_segments_total")
        host, port = e.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect((host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /slow/v0/seg.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = 0
        for _ in range(2000):  # bounded; ~32 KiB per 10 ms is far slower than 0.05 s of media
            chunk = await reader.read(32 * 1024)
            if not chunk:
                break
            received += len(chunk)
            await asyncio.sleep(0.01)
        writer.close()
        assert received > size
        assert await metric(s, e, "edge360_late_segments_total") == before + 1


async def test_client_fields_go_upstream_but_never_viewer_or_hop_fields() -> None:
    """RFC 9110 §7.6: the edge forwards the client's end-to-end fields on a miss; hop-by-hop ones,
    CMCD and (with a peer token) the viewer's Authorization stay behind."""
    async def seg(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x", headers={"Cache-Control": "max-age=60"})

    async with fake_upstream(seg) as (u, fake), edge([u], {"EDGE360_PEER_TOKEN": "peer"}) as e, \
            aiohttp.ClientSession() as s:
        await get(s, e + "/t/a.bin", {"Accept-Language": "fr", "X-Custom": "1",
                                      "CMCD-Session": 'sid="v1"', "Authorization": "Basic v",
                                      "Connection": "keep-alive, X-Hop", "X-Hop": "h"})
        sent = CIMultiDict(fake.seen[0][2])
        assert (sent["Accept-Language"], sent["X-Custom"]) == ("fr", "1")
        assert sent["Authorization"] == "Bearer peer"
        assert "CMCD-Session" not in sent and "X-Hop" not in sent


async def test_other_content_is_never_served_stale_unasked() -> None:
    """The default stale windows (stale_while_revalidate, stale_if_error) are for HLS kinds; other
    content is served stale only with the upstream's or the client's permission (§4.2.4)."""
    clock = FakeClock(1_000_000.0)
    calls: dict[str, int] = {}

    async def once(request: web.Request) -> web.StreamResponse:
        calls[request.path] = calls.get(request.path, 0) + 1
        if calls[request.path] > 1:
            return web.Response(status=503)
        return web.Response(body=b"v1", headers={"Cache-Control": "max-age=1"})

    async with fake_upstream(once) as (u, _fake), running_app(make_config(
            {"server.role": "edge", "edge.upstreams": [u], "edge.health_interval": 30,
             "edge.retries": 0}), clock=clock) as e, aiohttp.ClientSession() as s:
        for path in ("/t/a.ts", "/t/a.bin"):
            assert (await get(s, e + path))[1]["X-Cache"] == "MISS"
        clock.advance(5)
        st, h, b = await get(s, e + "/t/a.ts")
        assert (st, h["X-Cache"], b) == (200, "STALE", b"v1")
        st, h, _ = await get(s, e + "/t/a.bin")
        assert (st, h["X-Cache"]) == (503, "MISS")


async def test_answers_other_than_200_are_cached_by_their_own_freshness() -> None:
    """RFC 9111 §3: a storable redirect or error with explicit freshness is stored and served with
    its status; an explicitly stale one is never served from the negative cache; a silent 5xx of
    non-HLS content is not cached (not heuristically cacheable), while HLS kinds keep the
    operator's negative_ttl."""
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/t/moved.bin":
            return web.Response(status=301, headers={"Location": "/t/x.bin",
                                                     "Cache-Control": "max-age=60"})
        if request.path == "/t/gone.bin":
            return web.Response(status=404, body=b"no", headers={"Expires": "0"})
        return web.Response(status=500, body=b"err")

    async with fake_upstream(answer) as (u, fake), edge([u], **{"edge.retries": 0}) as e, \
            aiohttp.ClientSession() as s:
        results = []
        for _ in range(2):
            async with s.get(e + "/t/moved.bin", allow_redirects=False) as r:
                results.append((r.status, r.headers["Location"], r.headers["X-Cache"]))
            for path in ("/t/gone.bin", "/t/err.bin", "/t/err.ts"):
                assert (await get(s, e + path))[0] in (404, 500)
        assert results == [(301, "/t/x.bin", "MISS"), (301, "/t/x.bin", "HIT")]
        assert [fake.count(p) for p in ("/t/moved.bin", "/t/gone.bin", "/t/err.bin",
                                        "/t/err.ts")] == [1, 2, 2, 1]


async def test_one_date_and_server_x_cache_on_every_refusal_and_age_on_held_errors() -> None:
    """A cached answer keeps its origin's Date (one Date, one Server: never two); refusals
    decided before any lookup still say X-Cache; a held 404 says how old it is."""
    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("gone.ts"):
            return web.Response(status=404, body=b"no")
        return web.Response(body=b"x" * 100, headers={"Cache-Control": "max-age=60"})

    async with fake_upstream(upstream) as (up, _), \
            edge([up], {"EDGE360_EDGE_NEGATIVE_TTL": "60"}) as e:
        port = int(e.rsplit(":", 1)[1])
        for _ in range(2):  # the miss, then the hit
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /t/v0/a.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            writer.close()
            assert head.count(b"\r\ndate:") == 1 and head.count(b"\r\nserver:") == 1, head
        for method, path in (("DELETE", "/t/v0/a.ts"), ("GET", "/t/%2e%2e/a.ts"), ("GET", "/")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         .encode())
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            writer.close()
            assert int(head.split()[1]) >= 400 and b"\r\nx-cache: miss" in head, (method, head)
        async with aiohttp.ClientSession() as s:
            for expected in ("MISS", "HIT"):
                st, h, _ = await get(s, e + "/t/v0/gone.ts")
                assert (st, h["X-Cache"]) == (404, expected)
            assert h["Age"].isdigit()
