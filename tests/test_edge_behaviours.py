"""What a cache operator expects of the edge, each against a real edge: prefetch of the next
segment, negative caching that never hides a good copy, redirects passed on, HEAD on a miss,
and invalidation after an unsafe method passed through (RFC 9111 §4.4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import edge, fake_upstream, get, metric, origin
from tests.fixtures.titles import make_title


async def test_prefetch_fetches_the_next_segment_and_counts_its_hit(tmp_path: Path) -> None:
    files = make_title(tmp_path)
    admin = {"EDGE360_EDGE_PREFETCH_DEPTH": "1", "EDGE360_ADMIN_TOKEN": "adm1n"}
    async with origin(tmp_path) as o, edge([o], admin) as e, aiohttp.ClientSession() as s:
        assert (await get(s, e + "/demo/v0/index.m3u8?sid=viewer0001"))[0] == 200
        st, h, _ = await get(s, e + "/demo/v0/seg_000.ts?sid=viewer0001")
        assert (st, h["X-Cache"]) == (200, "MISS")
        # the edge fetches seg_001 ahead of demand: wait (bounded) until it is stored, so the
        # viewer's request is answered from the prefetched copy rather than joining its fetch
        for _ in range(200):
            async with s.get(e + "/admin/cache?path=/demo/v0/seg_001.ts",
                             headers={"Authorization": "Bearer adm1n"}) as r:
                if (await r.json())["tiers"]:
                    break
            await asyncio.sleep(0.05)
        assert await metric(s, e, "edge360_prefetches_total", 'result="issued"') >= 1
        st, h, body = await get(s, e + "/demo/v0/seg_001.ts?sid=viewer0001")
        assert (st, h["X-Cache"], body) == (200, "HIT", files["v0/seg_001.ts"])
        assert await metric(s, e, "edge360_prefetches_total", 'result="hit"') >= 1


async def test_negative_caching_is_brief_and_never_over_a_good_copy() -> None:
    state = {"status": 404, "hits": 0}

    async def upstream(request: web.Request) -> web.StreamResponse:
        state["hits"] += 1
        if state["status"] == 200:
            return web.Response(body=b"good", headers={"Cache-Control": "max-age=1"})
        return web.Response(status=state["status"], body=b"nope")

    clock = FakeClock(1e9)
    async with fake_upstream(upstream) as (u, fake), \
            edge([u], {"EDGE360_EDGE_NEGATIVE_TTL": "60"}, clock=clock) as e, \
            aiohttp.ClientSession() as s:
        for _ in range(3):
            st, h, _ = await get(s, e + "/t/v0/missing.ts")
            assert st == 404
        assert fake.count("/t/v0/missing.ts") == 1  # 404 cached briefly (negative_ttl)
        # a good copy is stored; a later upstream 5xx must not replace it
        state["status"] = 200
        st, _, body = await get(s, e + "/t/v0/good.ts")
        assert (st, body) == (200, b"good")
        state["status"] = 503
        clock.advance(1.2)  # let the good copy go stale (max-age=1)
        for _ in range(2):
            st, h, body = await get(s, e + "/t/v0/good.ts")
            assert (st, body) == (200, b"good"), h  # stale-if-error, never the cached 503
            assert h["X-Cache"] == "STALE"


async def test_redirects_are_passed_on_not_followed() -> None:
    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.path == "/t/old.m3u8":
            return web.Response(status=302, headers={"Location": "/t/new.m3u8"})
        return web.Response(body=b"#EXTM3U\n", content_type="application/vnd.apple.mpegurl")

    async with fake_upstream(upstream) as (u, fake), edge([u]) as e, \
            aiohttp.ClientSession() as s:
        async with s.get(e + "/t/old.m3u8", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/t/new.m3u8"
        assert fake.count("/t/new.m3u8") == 0  # the edge did not follow it


async def test_head_on_a_miss_stores_no_partial_object() -> None:
    async def upstream(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 50_000, headers={"Cache-Control": "max-age=600"})

    async with fake_upstream(upstream) as (u, _fake), edge([u]) as e, \
            aiohttp.ClientSession() as s:
        async with s.head(e + "/t/v0/seg.ts") as r:
            assert r.status == 200 and await r.read() == b""
        st, h, body = await get(s, e + "/t/v0/seg.ts")
        assert st == 200 and body == b"x" * 50_000  # whole and right, never a truncated copy
        st, h, body = await get(s, e + "/t/v0/seg.ts")
        assert (h["X-Cache"], len(body)) == ("HIT", 50_000)


async def test_unsafe_method_passed_through_invalidates_the_stored_url() -> None:
    version = {"n": 1}

    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            version["n"] += 1
            return web.Response(status=204)
        return web.Response(body=f"v{version['n']}".encode(),
                            headers={"Cache-Control": "max-age=600"})

    async with fake_upstream(upstream) as (u, fake), \
            edge([u], {"EDGE360_EDGE_PASS_METHODS": "POST"}) as e, aiohttp.ClientSession() as s:
        assert (await get(s, e + "/t/doc.json"))[2] == b"v1"
        assert (await get(s, e + "/t/doc.json"))[1]["X-Cache"] == "HIT"
        async with s.post(e + "/t/doc.json", data=b"{}") as r:
            assert r.status == 204
        _st, h, body = await get(s, e + "/t/doc.json")
        assert (h["X-Cache"], body) == ("MISS", b"v2")
        async with s.put(e + "/t/doc.json", data=b"{}") as r:
            assert r.status == 405  # only the configured methods pass
        assert sum(1 for m, _p, _h in fake.seen if m == "PUT") == 0


async def test_a_huge_uncacheable_body_is_relayed_through_a_window() -> None:
    """A 48 MiB body the edge must not store (no-store): while the client reads nothing, the
    upstream can send only about the relay window (8 MiB) plus socket buffers, never the
    whole body into the edge's memory; the client then gets every byte; a second client
    asking meanwhile gets its own fetch (the first let those bytes go), and its multiple ranges
    are read in order from that fetch."""
    size, part = 48 * 1024 * 1024, 256 * 1024
    body = bytes(range(256)) * (size // 256)
    sent = {"bytes": 0}

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "no-store",
                                           "Content-Type": "video/mp2t"})
        resp.content_length = size
        await resp.prepare(request)
        for at in range(0, size, part):
            await resp.write(body[at:at + part])
            sent["bytes"] += part
        return resp

    async with fake_upstream(huge) as (up, fake), edge([up]) as e, \
            aiohttp.ClientSession() as s:
        async with s.get(e + "/big/file.ts") as r:
            assert r.status == 200
            first = await r.content.readexactly(65536)
            last, still = -1, 0
            for _ in range(400):  # bounded: wait until the upstream stops getting anywhere
                await asyncio.sleep(0.02)
                still = still + 1 if sent["bytes"] == last else 0
                last = sent["bytes"]
                if still >= 10:
                    break
            assert sent["bytes"] < size // 2, sent  # held back by the edge, not buffered
            st, h, other = await get(s, e + "/big/file.ts", {"Range": "bytes=0-9,100-109"})
            assert st == 206 and h["Content-Type"].startswith("multipart/byteranges")
            assert body[0:10] in other and body[100:110] in other
            rest = await r.content.read()
        assert first + rest == body
        assert fake.count("/big/file.ts") == 2


async def test_invalidation_removes_a_pieced_object_from_both_tiers(tmp_path: Path) -> None:
    """A POST passed through removes the stored head and each of its pieces by exact key, from
    memory and from the disk tier (no directory scan), and the next GET fetches afresh."""
    big = tmp_path / "big.ts"
    big.write_bytes(bytes(range(256)) * 1024)  # 256 KiB: four 64 KiB pieces

    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return web.Response(status=204)
        return web.FileResponse(big, headers={"Cache-Control": "max-age=600"})

    disk = tmp_path / "disk"
    env = {"EDGE360_EDGE_PASS_METHODS": "POST", "EDGE360_ADMIN_TOKEN": "adm1n",
           "EDGE360_EDGE_CACHE_DIR": str(disk), "EDGE360_EDGE_PIECE_BYTES": "65536"}
    auth = {"Authorization": "Bearer adm1n"}
    async with fake_upstream(upstream) as (u, fake), edge([u], env) as e, \
            aiohttp.ClientSession() as s:
        st, _, body = await get(s, e + "/t/big.ts", {"Range": "bytes=0-262143"})
        assert st == 206 and body == big.read_bytes()
        async with s.get(e + "/admin/cache?path=/t/big.ts", headers=auth) as r:
            before = await r.json()
        assert set(before["tiers"]) == {"memory", "disk"}
        files = sum(1 for p in disk.rglob("*") if p.is_file())
        assert files >= 5  # the head and four pieces
        async with s.post(e + "/t/big.ts", data=b"{}") as r:
            assert r.status == 204
        async with s.get(e + "/admin/cache?path=/t/big.ts", headers=auth) as r:
            assert (await r.json())["tiers"] == []
        assert sum(1 for p in disk.rglob("*") if p.is_file()) == files - 5
        fetched = fake.count("/t/big.ts")
        st, h, body = await get(s, e + "/t/big.ts", {"Range": "bytes=0-99"})
        assert (st, h["X-Cache"], body) == (206, "MISS", big.read_bytes()[:100])
        assert fake.count("/t/big.ts") > fetched
