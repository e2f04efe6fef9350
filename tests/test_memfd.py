"""Pieces the memory tier holds in sealed memfd files (cache.memfd): their bytes never change,
their file stays open while an answer holds any of it (a piece evicted mid-answer included), the
number held is bounded, and an edge answers them with the same bytes over plain TCP (sendfile)
and TLS (written from the mapping), whole and in ranges."""

from __future__ import annotations

import fcntl
import gc
import hashlib
import os
import ssl
import weakref
from pathlib import Path

import aiohttp
import pytest

from edge360.cache import memfd
from edge360.cache.memory import MemoryCache
from edge360.core.ranges import ByteRange
from edge360.edge.held import slices
from edge360.http.response import FileSpan
from tests.fixtures.servers import start_process
from tests.fixtures.titles import make_title

PIECE = 256 * 1024


def test_a_held_piece_is_a_sealed_read_only_file_with_the_same_bytes() -> None:
    data = os.urandom(PIECE)
    held = memfd.hold(data)
    assert isinstance(held, memoryview) and held.readonly and held == data
    fd = memfd.fd_of(held)
    assert fd is not None and os.pread(fd, PIECE, 0) == data
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
    with pytest.raises(OSError):
        os.pwrite(fd, b"x", 0)  # sealed: nobody can change the bytes under a reader
    assert memfd.fd_of(held[1:]) is None  # a slice's offset in the file is unknown: no file
    assert memfd.hold(b"small") == b"small"  # under MIN_BYTES: kept as bytes


def test_an_evicted_piece_stays_readable_until_the_answer_lets_go() -> None:
    data = os.urandom(PIECE)
    cache = MemoryCache(2 * PIECE, 100)
    cache.put("a", b"", memfd.hold(data))
    entry = cache.get("a")
    assert entry is not None and memfd.fd_of(entry.body) is not None  # kept, not copied
    parts = slices(ByteRange(1000, PIECE - 1), PIECE, {0: entry.body}.__getitem__)
    assert len(parts) == 1 and isinstance(parts[0], FileSpan)
    span = parts[0]
    mapping = weakref.ref(entry.body.obj)  # type: ignore[arg-type]
    del entry
    cache.put("b", b"", os.urandom(PIECE))
    cache.put("c", b"", os.urandom(PIECE))  # "a" is evicted while the answer holds its span
    assert "a" not in cache
    gc.collect()
    assert os.pread(span.fd, span.count, span.offset) == data[1000:]
    assert span.view is not None and span.view == data[1000:]
    fd = span.fd
    del span, parts
    gc.collect()
    assert mapping() is None
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once nothing holds the mapping


def test_the_number_of_held_pieces_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    keep = [memfd.hold(os.urandom(PIECE))]
    monkeypatch.setattr(memfd, "MAX_HELD", len(memfd._FDS))
    over = memfd.hold(os.urandom(PIECE))
    assert isinstance(over, bytes)  # past the bound: bytes, written as before
    assert keep


async def test_an_edge_sends_held_pieces_with_the_same_bytes_plain_and_tls(
        tmp_path: Path, cert: tuple[Path, Path]) -> None:
    media = tmp_path / "media"
    data = os.urandom(3 * PIECE + 77)
    make_title(media, extra={"v0/big.ts": data})
    crt, key = cert
    origin = start_process(["serve", "--port", "0", "--media", str(media)])
    edge_args = ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base]
    pieces = {"EDGE360_EDGE_PIECE_BYTES": str(PIECE)}
    plain = start_process(edge_args, pieces)
    tls = start_process(edge_args, {**pieces, "EDGE360_SERVER_TLS_CERT": str(crt),
                                    "EDGE360_SERVER_TLS_KEY": str(key)})
    ctx = ssl.create_default_context(cafile=str(crt))
    cases = ((None, data), (f"bytes={PIECE - 5}-{2 * PIECE + 9}", data[PIECE - 5:2 * PIECE + 10]),
             ("bytes=-100", data[-100:]))
    try:
        async with aiohttp.ClientSession() as s:
            for base in (plain.base, tls.base):
                url = base + "/demo/v0/big.ts"
                async with s.get(url, ssl=ctx if base == tls.base else None) as r:
                    assert await r.read() == data  # the miss that stores the pieces
                for rng, want in cases:
                    headers = {"Range": rng} if rng else {}
                    async with s.get(url, headers=headers,
                                     ssl=ctx if base == tls.base else None) as r:
                        assert r.headers["X-Cache"] == "HIT", (base, rng)
                        body = await r.read()
                        assert (r.status, hashlib.sha256(body).hexdigest()) == (
                            200 if rng is None else 206, hashlib.sha256(want).hexdigest())
    finally:
        tls.stop()
        plain.stop()
        origin.stop()
