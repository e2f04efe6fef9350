"""The edge's disk tier across real process lifetimes: a restart serves a HIT without the
upstream; a SIGKILL in the middle of writing an object never leaves it servable."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.fixtures.edges import fake_upstream, get, wait_on_disk
from tests.fixtures.servers import start_process
from tests.fixtures.titles import make_title

ENV = {"EDGE360_ADMIN_TOKEN": "adm1n"}
AUTH = {"Authorization": "Bearer adm1n"}


def _names(root: str, ext: str) -> list[str]:
    """Files under the cache directory ending in `ext` (.e360 entries, .tmp partial writes)."""
    return sorted(p.name for p in Path(root).rglob("*") if p.name.endswith(ext))


async def test_restart_serves_hit_from_disk_without_upstream(tmp_path: Path) -> None:
    files = make_title(tmp_path / "media")
    cache_dir = str(tmp_path / "cache")
    origin = start_process(["serve", "--port", "0", "--media", str(tmp_path / "media")])
    try:
        args = ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base]
        env = {**ENV, "EDGE360_EDGE_CACHE_DIR": cache_dir}
        first = start_process(args, env)
        try:
            async with aiohttp.ClientSession() as s:
                st, h, b = await get(s, first.base + "/demo/v0/seg_001.ts")
                assert (st, h["X-Cache"], b) == (200, "MISS", files["v0/seg_001.ts"])
                await wait_on_disk(s, first.base, "/demo/v0/seg_001.ts", AUTH)
        finally:
            assert first.stop() == 0
    finally:
        origin.stop()
    second = start_process(args, env)  # the origin is gone: only the disk can answer
    try:
        async with aiohttp.ClientSession() as s:
            st, h, b = await get(s, second.base + "/demo/v0/seg_001.ts")
            assert (st, h["X-Cache"], b) == (200, "HIT", files["v0/seg_001.ts"])
            st, h, b = await get(s, second.base + "/demo/v0/seg_001.ts",
                                 {"Range": "bytes=10-19"})
            assert (st, b) == (206, files["v0/seg_001.ts"][10:20])
    finally:
        second.stop()


async def test_sigkill_mid_write_never_served(tmp_path: Path) -> None:
    stall = asyncio.Event()
    half_sent = asyncio.Event()
    whole = b"A" * 200_000
    mode = ["stall"]

    async def upstream(request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": "max-age=3600"}
        if mode[0] == "whole":
            return web.Response(body=b"B" * 200_000, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(whole)
        await resp.prepare(request)
        await resp.write(whole[:100_000])
        half_sent.set()
        try:
            await asyncio.wait_for(stall.wait(), 60)
        except TimeoutError:
            pass
        return resp

    cache_dir = str(tmp_path / "cache")
    async with fake_upstream(upstream) as (u, fake):
        args = ["serve", "--role", "edge", "--port", "0", "--upstream", u]
        env = {**ENV, "EDGE360_EDGE_CACHE_DIR": cache_dir, "EDGE360_EDGE_READ_TIMEOUT": "60"}
        victim = await asyncio.to_thread(start_process, args, env)
        try:
            async with aiohttp.ClientSession() as s, s.get(victim.base + "/t/half.ts") as r:
                first = await asyncio.wait_for(r.content.readany(), 20)
                assert first and r.headers["X-Cache"] == "MISS"
                await asyncio.wait_for(half_sent.wait(), 20)
                # bounded wait until the edge has written some of it to a temp file
                for _ in range(100):
                    if _names(cache_dir, ".tmp"):
                        break
                    await asyncio.sleep(0.05)
                victim.stop(signal.SIGKILL)
        finally:
            victim.stop()
        stall.set()
        mode[0] = "whole"
        assert not _names(cache_dir, ".e360")
        again = await asyncio.to_thread(start_process, args, env)
        try:
            async with aiohttp.ClientSession() as s:
                st, h, b = await get(s, again.base + "/t/half.ts")
                assert (st, h["X-Cache"], b) == (200, "MISS", b"B" * 200_000)
        finally:
            again.stop()
        assert fake.count("/t/half.ts") == 2
        # the killed writer's temp file was reclaimed at the restart (a temp file of the
        # second process, stopped right after answering, may still be committing)
        leftovers = [n for n in _names(cache_dir, ".tmp") if f".{victim.proc.pid}." in n]
        assert not leftovers, leftovers
