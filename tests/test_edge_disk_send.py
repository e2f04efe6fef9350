"""Pieces held only by the disk tier go out from their files (sendfile on plain TCP, read in a
worker thread under TLS): whole answers, ranges across pieces and multipart ranges carry exactly
the stored bytes; a piece file that fails its crc is deleted and fetched again, never sent."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fixtures.edges import edge, fake_upstream, get, origin, wait_on_disk
from tests.fixtures.titles import make_title

MiB = 1024 * 1024
PATH = "/demo/v0/big.ts"
AUTH = {"Authorization": "Bearer adm1n"}
#: a memory tier smaller than one 2 MiB piece: every piece lives on disk only
SMALL_MEMORY: dict[str, Any] = {"edge.cache_memory_bytes": MiB, "edge.prefetch_depth": 0}


def _files(root: Path) -> bytes:
    data = os.urandom(5 * MiB + 123)  # three pieces, the last one short
    make_title(root, extra={"v0/big.ts": data})
    return data


def _open_under(root: Path) -> list[str]:
    """The files under `root` this process (the in-process edge) holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(str(root)):
            found.append(target)
    return found


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        byte = os.pread(f.fileno(), 1, at)
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), at)


async def _check_answers(s: aiohttp.ClientSession, base: str, data: bytes) -> None:
    st, h, body = await get(s, base + PATH)
    assert (st, h["X-Cache"], len(body)) == (200, "HIT", len(data)) and body == data
    a, b = 2 * MiB - 100, 4 * MiB + 50  # across all three pieces
    st, h, body = await get(s, base + PATH, {"Range": f"bytes={a}-{b}"})
    assert (st, h["Content-Range"]) == (206, f"bytes {a}-{b}/{len(data)}")
    assert body == data[a:b + 1]
    st, h, body = await get(s, base + PATH, {"Range": "bytes=0-9,-20"})
    assert st == 206 and h["Content-Type"].startswith("multipart/byteranges")
    assert data[:10] in body and data[-20:] in body


async def test_disk_pieces_sent_from_their_files(tmp_path: Path) -> None:
    data = _files(tmp_path / "media")
    async with origin(tmp_path / "media") as up, \
            edge([up], {"EDGE360_ADMIN_TOKEN": "adm1n"},
                 **{**SMALL_MEMORY, "edge.cache_dir": str(tmp_path / "cache")}) as base, \
            aiohttp.ClientSession() as s:
        st, h, body = await get(s, base + PATH)
        assert (st, h["X-Cache"], body == data) == (200, "MISS", True)
        # no piece fits the memory tier: once on disk, each answer is sent from the files
        await wait_on_disk(s, base, PATH, AUTH, [0, 1, 2])
        await _check_answers(s, base, data)
        # a client that leaves after the first bytes: the answer's files are closed all the same
        async with s.get(base + PATH) as r:
            await r.content.readexactly(1000)
        await asyncio.sleep(0.2)
        assert _open_under(tmp_path / "cache") == []


async def test_disk_pieces_over_tls(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    data = _files(tmp_path / "media")
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    async with origin(tmp_path / "media") as up, \
            edge([up], {"EDGE360_ADMIN_TOKEN": "adm1n"},
                 **{**SMALL_MEMORY, "edge.cache_dir": str(tmp_path / "cache"),
                    "server.tls_cert": str(cert[0]), "server.tls_key": str(cert[1])}) as base, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        assert base.startswith("https://")
        st, _, body = await get(s, base + PATH)
        assert (st, body == data) == (200, True)
        await wait_on_disk(s, base, PATH, AUTH, [0, 1, 2])
        await _check_answers(s, base, data)


async def test_corrupt_piece_file_is_fetched_again(tmp_path: Path) -> None:
    """A second edge on the same cache directory (a restart: nothing checked yet) finds one
    piece file damaged: it deletes it and fetches the piece, the answer is still exact."""
    data = _files(tmp_path / "media")
    cache = tmp_path / "cache"
    flags: dict[str, Any] = {**SMALL_MEMORY, "edge.cache_dir": str(cache)}
    env = {"EDGE360_ADMIN_TOKEN": "adm1n"}
    async with origin(tmp_path / "media") as up:
        async with edge([up], env, **flags) as base, aiohttp.ClientSession() as s:
            assert (await get(s, base + PATH))[2] == data
            await wait_on_disk(s, base, PATH, AUTH, [0, 1, 2])
        pieces = sorted((p for p in cache.rglob("*.e360") if p.stat().st_size > MiB),
                        key=lambda p: p.stat().st_size)
        assert len(pieces) == 3
        damaged = pieces[-1]  # a whole 2 MiB piece
        _flip(damaged, damaged.stat().st_size - 4096)  # inside the body (the meta trails it)
        bad = damaged.read_bytes()
        async with edge([up], env, **flags) as base, aiohttp.ClientSession() as s:
            st, h, body = await get(s, base + PATH)
            assert (st, h["X-Cache"], body == data) == (200, "HIT", True)
        # deleted, then stored again from the fetch (a new file: a new nonce in its header)
        assert not damaged.exists() or damaged.read_bytes() != bad


#: seconds the whole object stays fresh upstream
LIFETIME = 4
WHOLE = os.urandom(MiB + MiB // 2)  # under one piece: stored whole, and bigger than the memory tier


async def test_whole_object_on_disk_sent_from_its_file(tmp_path: Path) -> None:
    """A whole body only the disk holds: hits and ranges from its file; a 304 and a HEAD send
    nothing (and close it); once stale, the revalidation reads the bytes, asks the upstream
    conditionally and the answers stay exact."""
    etag = '"w1"'

    async def serve(request: web.Request) -> web.Response:
        # a lifetime the hits below fit in even on a loaded machine (with 1 s, a full suite on
        # two cores once made the object stale before them and it was fetched again)
        headers = {"ETag": etag, "Cache-Control": f"max-age={LIFETIME}"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=WHOLE, headers=headers, content_type="video/mp2t")

    path = "/t/v/whole.ts"
    async with fake_upstream(serve) as (up, fake), \
            edge([up], {"EDGE360_ADMIN_TOKEN": "adm1n"},
                 **{**SMALL_MEMORY, "edge.cache_dir": str(tmp_path / "cache")}) as base, \
            aiohttp.ClientSession() as s:
        st, h, body = await get(s, base + path)
        assert (st, h["X-Cache"], body == WHOLE) == (200, "MISS", True)
        await wait_on_disk(s, base, path, AUTH)
        st, h, body = await get(s, base + path)
        assert (st, h["X-Cache"], body == WHOLE) == (200, "HIT", True)
        st, h, body = await get(s, base + path, {"Range": "bytes=1000-1999,-7"})
        assert st == 206 and WHOLE[1000:2000] in body and WHOLE[-7:] in body
        st, h, body = await get(s, base + path, {"Range": f"bytes={len(WHOLE) - 10}-"})
        assert (st, body) == (206, WHOLE[-10:])
        st, h, body = await get(s, base + path, {"If-None-Match": etag})
        assert (st, body) == (304, b"")
        async with s.head(base + path) as r:
            assert (r.status, r.headers["Content-Length"]) == (200, str(len(WHOLE)))
        st, h, _ = await get(s, base + path, {"Range": f"bytes={len(WHOLE)}-"})
        assert (st, h["X-Cache"]) == (416, "HIT")
        assert fake.count(path) == 1
        assert _open_under(tmp_path / "cache") == []  # every answer closed its file
        await asyncio.sleep(LIFETIME + 0.2)  # stale now: the edge refreshes it conditionally
        for _ in range(40):  # bounded
            st, h, body = await get(s, base + path)
            assert (st, body == WHOLE) == (200, True)
            if fake.count(path) == 2:
                break
            await asyncio.sleep(0.05)
        assert fake.count(path) == 2 and fake.seen[-1][2].get("If-None-Match") == etag
        st, h, body = await get(s, base + path)
        assert (st, body == WHOLE) == (200, True)
