"""Pieces and whole segments the memory tier holds in sealed memfd files (cache.memfd): their
bytes never change, their file stays open while an answer holds any of it (a piece evicted
mid-answer included), the number held is bounded, and an edge answers them with the same bytes
over plain TCP (sendfile) and TLS (written from the mapping), whole and in ranges."""

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
from edge360.edge.held import from_whole, slices
from edge360.edge.objects import Target, new_object
from edge360.edge.stored import StoredObject
from edge360.http.represent import Prepared
from edge360.http.response import FileSpan
from edge360.http.wire import Request
from tests.fixtures.servers import make_config, start_process
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


@pytest.mark.parametrize("whole", [False, True], ids=["pieces", "whole-segment"])
async def test_an_edge_sends_held_pieces_with_the_same_bytes_plain_and_tls(
        tmp_path: Path, cert: tuple[Path, Path], whole: bool) -> None:
    """In pieces (an object longer than edge.piece_bytes), or whole (a segment under it, but
    big enough to be held in a memfd: edge.store, edge.held.from_whole)."""
    media = tmp_path / "media"
    data = os.urandom(3 * PIECE + 77)
    make_title(media, extra={"v0/big.ts": data})
    crt, key = cert
    origin = start_process(["serve", "--port", "0", "--media", str(media)])
    edge_args = ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base]
    pieces = {"EDGE360_EDGE_PIECE_BYTES": str(4 * PIECE if whole else PIECE)}
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


def test_a_whole_body_held_in_a_memfd_is_answered_from_its_file() -> None:
    """edge.held.from_whole: a whole body the memory tier holds in a memfd gives spans of that
    file (sendfile), each with its bytes in memory (TLS); a body in bytes gives slices."""
    data = os.urandom(PIECE + 3)
    held = memfd.hold(data)
    fd = memfd.fd_of(held)
    assert fd is not None
    stored = StoredObject.decode(new_object(
        make_config({"server.role": "edge", "edge.upstreams": ["http://127.0.0.1:9"]}).edge,
        Target.of("/t/a.ts", "/t/a.ts", "t"),
        {"cache-control": "max-age=60"}, 0.0, 0.0, len(data), data).encode())
    assert stored is not None
    prepared = Prepared({"Content-Type": "video/mp2t"})
    for rng, want in ((None, data), ("bytes=10-99", data[10:100]), ("bytes=-7", data[-7:])):
        request = Request("GET", "/t/a.ts", {"range": rng} if rng else {}, "1.1", True,
                          "127.0.0.1")
        answer = from_whole(request, stored, held, prepared, 8, "HIT")
        parts = answer.parts if answer.parts is not None else [answer.body]
        assert len(parts) == 1 and isinstance(parts[0], FileSpan)
        span = parts[0]
        assert span.fd == fd and os.pread(span.fd, span.count, span.offset) == want
        assert span.view is not None and bytes(span.view) == want
        plain = from_whole(request, stored, data, prepared, 8, "HIT")
        assert bytes(plain.body if plain.body is not None else b"") == want
