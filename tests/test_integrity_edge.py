"""Never a wrong byte at the edge, with real processes and real files (bytes compared by sha256
with the versions of the file): pieces of two versions are never combined, an object without a
strong validator is never assembled from separate fetches, a herd through a shield is never cut
for joining late, a cut is one counted line (never a traceback), a hanging parent gives way to
the stale copy after edge.revalidate_timeout, and a big cold object costs a window of memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import edge, fake_upstream, metric
from tests.fixtures.fleets import fleet
from tests.fixtures.servers import REPO, ServerProcess, free_port, start_process
from tests.fixtures.titles import add_files, make_title, publish
from tests.test_tiers import PEER

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_version(path: Path, data: bytes) -> None:
    """Replace a published file by another version (a rename, as packagers publish)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    publish(path)


async def get_body(s: aiohttp.ClientSession, url: str,
                   headers: dict[str, str] | None = None) -> tuple[int, str, bytes | None]:
    """(status, X-Cache, body); body None when the answer was cut short."""
    try:
        async with s.get(url, headers=headers or {}) as r:
            return r.status, r.headers.get("X-Cache", ""), await r.read()
    except aiohttp.ClientPayloadError:
        return 0, "", None


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    make_title(root, extra={"v0/big.ts": os.urandom(3 * MiB)})
    return root


@pytest.fixture
def http_server_origin(media: Path) -> Iterator[str]:
    """python's http.server on the media root: Last-Modified, no ETag, Range honoured."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(media)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


def origin_process(media: Path) -> ServerProcess:
    return start_process(["serve", "--port", "0", "--media", str(media)],
                         {"EDGE360_ORIGIN_SETTLE_SECONDS": "0.5"})


async def test_pieces_of_two_versions_are_never_combined(media: Path) -> None:
    """The edge holds piece 0 of a 3 MiB segment; the file is replaced at the origin. The next
    full GET fetches pieces 1-2 with If-Match: the origin refuses (the ETag changed), that answer
    is cut, the object is discarded, and from then on the edge serves the new version whole."""
    path = media / "demo" / "v0" / "big.ts"
    old, new = path.read_bytes(), os.urandom(3 * MiB)
    origin = origin_process(media)
    try:
        async with edge([origin.base], **{"edge.piece_bytes": MiB}) as e, \
                aiohttp.ClientSession() as s:
            url = e + "/demo/v0/big.ts"
            st, _, body = await get_body(s, url, {"Range": "bytes=0-99"})
            assert (st, body) == (206, old[:100])
            write_version(path, new)
            st, _, body = await get_body(s, url)
            assert body is None or sha(body) in (sha(old), sha(new)), "a mixed body"
            for _ in range(3):
                st, cache, body = await get_body(s, url)
                assert st == 200 and body is not None and sha(body) == sha(new)
            assert cache == "HIT"
            assert await metric(s, e, "edge360_upstream_requests_total", 'code="invalid"') >= 1
    finally:
        origin.stop()


async def test_an_object_without_a_strong_validator_is_never_assembled_from_pieces(
        media: Path, http_server_origin: str) -> None:
    """python's http.server sends Last-Modified but no ETag: a range of a cold object goes
    through as asked, the object is fetched whole behind it, and every later range comes from
    that one whole copy, whatever the file does at the origin meanwhile."""
    path = media / "demo" / "v0" / "big.ts"
    old = path.read_bytes()
    async with edge([http_server_origin], **{"edge.piece_bytes": MiB}) as e, \
            aiohttp.ClientSession() as s:
        url = e + "/demo/v0/big.ts"
        st, _, body = await get_body(s, url, {"Range": "bytes=0-99"})
        assert (st, body) == (206, old[:100])
        for _ in range(100):  # bounded: the whole copy arrives behind the range
            st, cache, body = await get_body(s, url, {"Range": "bytes=2097152-2097251"})
            if cache == "HIT":
                break
            await asyncio.sleep(0.05)
        assert (st, cache, body) == (206, "HIT", old[2097152:2097252])
        write_version(path, os.urandom(3 * MiB))
        st, _, body = await get_body(s, url)
        assert st == 200 and body is not None and sha(body) == sha(old)  # one version, whole
        st, _, body = await get_body(s, url, {"Range": "bytes=1048570-1048589"})
        assert (st, body) == (206, old[1048570:1048590])


async def test_a_herd_through_a_shield_is_never_cut(media: Path, tmp_path: Path) -> None:
    """The release moment: 2 edges -> 1 shield -> origin, 30 viewers start together, 10 at a
    time, each asking the master, a media playlist and the first segment. Every answer is whole
    (it was 5 of 15 bodies of Content-Length 1201320 with not one byte)."""
    add_files(media / "demo", {"v1/seg_000.ts": os.urandom(1_201_320)})
    segment = (media / "demo" / "v1" / "seg_000.ts").read_bytes()
    peer = {"EDGE360_PEER_TOKEN": PEER}
    with fleet(tmp_path) as f:
        o = f.start("origin", ["--port", "0", "--media", str(media)], {})
        shield = f.start("shield", ["--role", "edge", "--port", "0", "--upstream", o.base], peer)
        edges = [f.start(f"edge{i}", ["--role", "edge", "--port", "0", "--upstream",
                                      shield.base], peer) for i in range(2)]

        async def viewer(n: int) -> bytes:
            base = edges[n % 2].base
            async with aiohttp.ClientSession() as s:
                for path in ("/demo/master.m3u8", "/demo/v1/index.m3u8"):
                    async with s.get(base + path) as r:
                        assert r.status == 200
                        await r.read()
                async with s.get(base + "/demo/v1/seg_000.ts") as r:
                    assert r.status == 200
                    return await r.read()
        bodies: list[bytes] = []
        for batch in range(3):
            bodies += await asyncio.gather(*(viewer(batch * 10 + i) for i in range(10)))
        assert [sha(b) for b in bodies] == [sha(segment)] * 30
        for name in ("origin", "shield", "edge0", "edge1"):
            assert "Traceback" not in (tmp_path / f"{name}.log").read_text(), name


async def test_a_cut_is_counted_and_logged_once_never_a_traceback() -> None:
    """An upstream body that breaks off: the client's answer is cut short (never a clean short
    body), the cut is counted by reason, and nothing is stored."""
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60", "ETag": '"v1"'})
        resp.content_length = 1_000_000
        await resp.prepare(request)
        await resp.write(b"x" * 100_000)
        assert request.transport is not None
        request.transport.close()
        return resp

    async with fake_upstream(broken) as (up, fake), edge([up]) as e, \
            aiohttp.ClientSession() as s:
        _, _, body = await get_body(s, e + "/t/v0/seg.ts")
        assert body is None  # cut, not a 100 kB body ending cleanly
        for _ in range(50):  # bounded: the count lands once the answer ended
            if await metric(s, e, "edge360_responses_cut_total", 'reason="source"') >= 1:
                break
            await asyncio.sleep(0.05)
        assert await metric(s, e, "edge360_responses_cut_total", 'reason="source"') == 1
        assert await metric(s, e, "edge360_upstream_requests_total", 'code="truncated"') >= 1
        _, _, body = await get_body(s, e + "/t/v0/seg.ts")
        assert body is None and fake.count("/t/v0/seg.ts") == 2  # nothing was stored


async def test_a_hanging_parent_gives_way_to_the_stale_copy() -> None:
    """A stale object that stale-if-error allows: its revalidation waits edge.revalidate_timeout
    for the parent's first byte, then the stale copy answers (it took 30 s before)."""
    hang = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if hang.is_set():
            await asyncio.sleep(30)
        return web.Response(body=b"v" * 1000, headers={
            "Cache-Control": "max-age=1, stale-if-error=3600", "ETag": '"a"'})

    clock = FakeClock(1e9)
    async with fake_upstream(handler) as (up, _), \
            edge([up], clock=clock, **{"edge.revalidate_timeout": 0.3,
                                       "edge.stale_while_revalidate": 0}) as e, \
            aiohttp.ClientSession() as s:
        st, cache, _ = await get_body(s, e + "/t/file.bin")
        assert (st, cache) == (200, "MISS")
        clock.advance(1.2)  # stale now
        hang.set()
        st, cache, body = await asyncio.wait_for(get_body(s, e + "/t/file.bin"), 10)
        assert (st, cache, body) == (200, "STALE", b"v" * 1000)


def test_a_cold_big_object_costs_a_window_of_memory(tmp_path: Path) -> None:
    """A cold 200 MB object through an edge with a 64 MiB memory tier and no disk tier: the
    edge's peak RSS stays far below the object (it was 649 MiB)."""
    media = tmp_path / "media"
    make_title(media, extra={"v0/huge.ts": os.urandom(MiB) * 200})
    script = REPO / "benchmarks" / "memory_probe.py"
    out = subprocess.run([sys.executable, str(script), "--media", str(media), "--path",
                          "/demo/v0/huge.ts", "--memory", "64MiB"], capture_output=True,
                         text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = float(out.stdout.split()[0])
    assert peak_mib < 64 + 3 * 8 + 100, out.stdout
