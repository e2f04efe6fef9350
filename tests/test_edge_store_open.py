"""EdgeStore.lookup_or_open: a whole body that only the disk tier holds comes as its open file
from FILE_FROM bytes on (not copied into memory), as bytes below it (kept in memory for the next
hit) and as bytes from memory whatever its size; a playlist's caller asks for bytes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from edge360.cache.disk import DiskCache
from edge360.cache.diskformat import OpenBody
from edge360.edge.objects import Target, new_object
from edge360.edge.store import FILE_FROM, EdgeStore
from edge360.node.counters import Counters
from tests.fixtures.servers import make_config


def _store(tmp_path: Path, memory: int) -> EdgeStore:
    config = make_config({"server.role": "edge", "edge.upstreams": ["http://127.0.0.1:9"],
                          "edge.cache_dir": str(tmp_path / "cache"),
                          "edge.cache_memory_bytes": memory})
    return EdgeStore(config.edge, Counters())


async def _put(store: EdgeStore, path: str, body: bytes) -> None:
    t = Target.of(path, path, "t")
    now = time.time()
    obj = new_object(store.config, t, {"cache-control": "max-age=60"}, now, now, len(body), body)
    assert not obj.pieced
    await store.store(path, obj, body)


async def test_disk_only_whole_bodies(tmp_path: Path) -> None:
    store = _store(tmp_path, 1 << 20)  # the memory tier holds neither body below
    big, small = os.urandom(1 << 20 | 4096), os.urandom(FILE_FROM - 1)
    await _put(store, "/t/big.ts", big)
    await _put(store, "/t/small.ts", small)
    store.memory.pop("/t/small.ts")  # as if evicted: only the disk holds it now
    found = await store.lookup_or_open("/t/big.ts", FILE_FROM)
    assert found is not None and isinstance(found[1], OpenBody)
    opened = found[1]
    try:
        assert os.pread(opened.file.fileno(), opened.length, opened.offset) == big
    finally:
        opened.close()
    assert "/t/big.ts" not in store.memory  # sent from the page cache, not copied in
    found = await store.lookup_or_open("/t/small.ts", FILE_FROM)
    assert found is not None and found[1] == small
    assert "/t/small.ts" in store.memory  # small: read and kept for the next hit
    got = await store.lookup("/t/big.ts")  # bytes when the caller needs them (revalidation)
    assert got is not None and got[1] == big


async def test_memory_first_whatever_the_size(tmp_path: Path) -> None:
    store = _store(tmp_path, 64 << 20)
    body = os.urandom(1 << 20)
    await _put(store, "/t/held.ts", body)
    found = await store.lookup_or_open("/t/held.ts", FILE_FROM)
    assert found is not None and found[1] == body and not isinstance(found[1], OpenBody)


async def test_an_object_found_lately_is_looked_up_on_the_loops_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first disk lookup of an object runs in a worker thread (a cold disk may block); one
    within WARM_S of finding it runs on the event loop's thread (its file is in the page
    cache, and the thread hop cost more than the lookup). Both find the same bytes."""
    store = _store(tmp_path, 1 << 20)
    big = os.urandom(1 << 20 | 4096)
    await _put(store, "/t/big.ts", big)
    threads: list[int] = []
    found_by = DiskCache.open_body

    def recorded(self: DiskCache, key: str) -> OpenBody | None:
        threads.append(threading.get_ident())
        return found_by(self, key)
    monkeypatch.setattr(DiskCache, "open_body", recorded)
    for _ in range(2):
        found = await store.lookup_or_open("/t/big.ts", FILE_FROM)
        assert found is not None and isinstance(found[1], OpenBody)
        try:
            assert found[1].read() == big
        finally:
            found[1].close()
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread and threads[1] == loop_thread
    assert await store.lookup_or_open("/t/absent.ts", FILE_FROM) is None
    assert threads[2] != loop_thread  # never found: not warm
