"""The memory tier: budget and entry bounds, SLRU order, scan resistance, purge, meta refresh."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge360.cache.memory import ENTRY_OVERHEAD, MemoryCache, entry_size


def body(n: int, fill: int = 0x61) -> bytes:
    return bytes([fill]) * n


def test_round_trip_and_accounting() -> None:
    c = MemoryCache(10_000, 100)
    assert c.put("/a.ts", b"m", b"hello") == []
    e = c.get("/a.ts")
    assert e is not None and e.meta == b"m" and e.body == b"hello"
    assert bytes(e.view(1, 3)) == b"el"
    assert e.size == 5 + 1 + len("/a.ts") + ENTRY_OVERHEAD == c.size_bytes
    assert "/a.ts" in c and len(c) == 1 and list(c) == ["/a.ts"]
    assert c.get("/nope") is None
    s = c.stats
    assert (s.hits, s.misses, s.evictions, s.bytes, s.entries) == (1, 1, 0, c.size_bytes, 1)


def test_body_is_held_once_as_bytes() -> None:
    c = MemoryCache(10_000, 100)
    src = bytearray(b"abc")
    c.put("k", b"", src)  # type: ignore[arg-type]
    src[0] = 0x7A  # a caller's later change must not reach the cache
    e = c.peek("k")
    assert e is not None and type(e.body) is bytes and e.body == b"abc"
    raw = b"x" * 1000
    c.put("j", b"", raw)
    got = c.peek("j")
    assert got is not None and got.body is raw


@pytest.mark.parametrize(("size", "stored"), [
    (1000 - ENTRY_OVERHEAD - 1, True),   # exactly the budget with a 1-byte key
    (1000 - ENTRY_OVERHEAD, False),      # one byte over
    (5000, False),
])
def test_oversize_refused(size: int, stored: bool) -> None:
    c = MemoryCache(1000, 10)
    c.put("small", b"", b"x")
    assert c.fits(size + 1) is stored
    evicted = c.put("k", b"", body(size))
    assert ("k" in c) is stored
    assert evicted == (["small"] if stored else [])
    assert c.size_bytes <= 1000


def test_oversize_replacement_drops_stale_version() -> None:
    c = MemoryCache(1000, 10)
    c.put("k", b"", b"old")
    assert c.put("k", b"", body(2000)) == []
    assert "k" not in c and c.size_bytes == 0


def test_probation_evicts_lru_first() -> None:
    per = entry_size("k0", 0, 100)
    c = MemoryCache(per * 3, 100)
    for k in ("k0", "k1", "k2"):
        assert c.put(k, b"", body(100)) == []
    assert c.put("k3", b"", body(100)) == ["k0"]
    assert c.peek("k1") is not None  # peek has no policy effect
    assert c.put("k4", b"", body(100)) == ["k1"]


def test_promoted_entry_outlives_probation() -> None:
    per = entry_size("k0", 0, 100)
    c = MemoryCache(per * 4, 100, protected_fraction=0.5)
    for k in ("k0", "k1", "k2", "k3"):
        c.put(k, b"", body(100))
    assert c.get("k0") is not None  # promoted
    assert c.put("k4", b"", body(100)) == ["k1"]
    assert c.put("k5", b"", body(100)) == ["k2"]
    assert "k0" in c


def test_protected_overflow_demotes_to_probation_mru() -> None:
    per = entry_size("k0", 0, 100)
    c = MemoryCache(per * 4, 100, protected_fraction=0.5)  # protected holds 2
    for k in ("k0", "k1", "k2", "k3"):
        c.put(k, b"", body(100))
    for k in ("k0", "k1", "k2"):
        c.get(k)  # k0 is demoted when k2 is promoted
    assert c.stats.protected_bytes == 2 * per
    # probation order is now k3 (LRU), k0 (demoted, MRU)
    assert c.put("k4", b"", body(100)) == ["k3"]
    assert c.put("k5", b"", body(100)) == ["k0"]


@pytest.mark.parametrize("protected_fraction", [0.8, 0.5])
def test_scan_does_not_flush_hot_set(protected_fraction: float) -> None:
    per = entry_size("hot-00", 0, 1000)
    c = MemoryCache(per * 100, 10_000, protected_fraction=protected_fraction)
    hot = [f"hot-{i:02d}" for i in range(40)]
    for k in hot:
        c.put(k, b"", body(1000))
        assert c.get(k) is not None
    for i in range(5000):  # one-hit scan, 50x the cache
        c.put(f"scan-{i:05d}", b"", body(1000))
    assert all(k in c for k in hot)
    assert c.size_bytes <= c.budget_bytes


def test_scan_flushes_plain_lru() -> None:
    """The same scan with no protected share behaves like LRU: the property above is real."""
    per = entry_size("hot-00", 0, 1000)
    c = MemoryCache(per * 100, 10_000, protected_fraction=0.0)
    hot = [f"hot-{i:02d}" for i in range(40)]
    for k in hot:
        c.put(k, b"", body(1000))
        c.get(k)
    for i in range(5000):
        c.put(f"scan-{i:05d}", b"", body(1000))
    assert sum(k in c for k in hot) <= 1


def test_pop_and_pop_prefix() -> None:
    c = MemoryCache(1 << 20, 1000)
    for k in ("/demo/a.ts", "/demo/a.ts#p0", "/demo/b.m3u8", "/other/a.ts"):
        c.put(k, b"m", b"body")
    c.get("/demo/a.ts")  # one in protected, the rest in probation
    assert sorted(c.pop_prefix("/demo/")) == ["/demo/a.ts", "/demo/a.ts#p0", "/demo/b.m3u8"]
    assert list(c) == ["/other/a.ts"]
    assert c.size_bytes == entry_size("/other/a.ts", 1, 4)
    assert c.pop_prefix("/demo/") == []
    e = c.pop("/other/a.ts")
    assert e is not None and e.body == b"body"
    assert c.pop("/other/a.ts") is None
    assert c.size_bytes == 0 and len(c) == 0 and c.stats.evictions == 0


def test_update_meta() -> None:
    c = MemoryCache(entry_size("k", 0, 100) * 3 + 50, 100)
    c.put("k", b"old", body(100))
    before = c.peek("k")
    assert before is not None
    assert c.update_meta("k", b"new-meta")
    after = c.peek("k")
    assert after is not None and after.meta == b"new-meta" and after.body is before.body
    assert before.meta == b"old"  # a response streaming the old pair keeps it
    assert c.size_bytes == entry_size("k", 8, 100)
    assert not c.update_meta("absent", b"x")
    c.put("j", b"", body(100))
    c.put("i", b"", body(100))
    # growing meta evicts colder entries, never the refreshed one
    assert c.update_meta("k", b"m" * 120)
    assert "k" in c and c.size_bytes <= c.budget_bytes
    # a meta that alone exceeds the budget drops the entry
    assert not c.update_meta("k", b"m" * 10_000)
    assert "k" not in c and c.size_bytes <= c.budget_bytes


def test_max_entries_bounds_100k_random_keys() -> None:
    rng = random.Random(7)
    c = MemoryCache(1 << 30, 1000)
    for _ in range(100_000):
        k = f"/t/{rng.getrandbits(64):016x}.ts"
        c.put(k, b"", b"x")
        if rng.random() < 0.3:
            c.get(k)
        assert len(c) <= 1000
    assert len(c) == 1000
    assert len(c._probation) + len(c._protected) == 1000
    assert c.size_bytes == sum(e.size for e in map(c.peek, c) if e is not None)


class MemoryModel(RuleBasedStateMachine):
    """Against a dict of what must be present: put's evicted list is the only way to lose a key."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = MemoryCache(4000, 12, protected_fraction=0.6)
        self.model: dict[str, tuple[bytes, bytes]] = {}

    keys = st.sampled_from([f"/k{i}" for i in range(20)] + [f"/k{i}#p{j}" for i in range(3)
                                                              for j in range(3)])

    @rule(key=keys, meta=st.binary(max_size=40), size=st.integers(0, 4200),
          fill=st.integers(0, 255))
    def put(self, key: str, meta: bytes, size: int, fill: int) -> None:
        b = body(size, fill)
        evicted = self.cache.put(key, meta, b)
        assert key not in evicted and len(set(evicted)) == len(evicted)
        for k in evicted:
            assert k in self.model
            del self.model[k]
        self.model.pop(key, None)
        if entry_size(key, len(meta), size) <= self.cache.budget_bytes:
            self.model[key] = (meta, b)
        else:
            assert evicted == []

    @rule(key=keys)
    def get(self, key: str) -> None:
        e = self.cache.get(key)
        assert (e is None) == (key not in self.model)
        if e is not None:
            assert (e.meta, e.body) == self.model[key]

    @rule(key=keys, meta=st.binary(max_size=200))
    def update_meta(self, key: str, meta: bytes) -> None:
        present = key in self.model
        ok = self.cache.update_meta(key, meta)
        assert ok <= present
        if ok:
            self.model[key] = (meta, self.model[key][1])
        else:
            self.model.pop(key, None)
        # evictions caused by a larger meta: drop what the cache no longer has
        for k in [k for k in self.model if k not in self.cache]:
            del self.model[k]

    @rule(key=keys)
    def pop(self, key: str) -> None:
        e = self.cache.pop(key)
        assert (e is None) == (key not in self.model)
        self.model.pop(key, None)

    @precondition(lambda self: len(self.model) > 0)
    @rule(prefix=st.sampled_from(["/k1", "/k0#", "/k", "/z"]))
    def pop_prefix(self, prefix: str) -> None:
        removed = self.cache.pop_prefix(prefix)
        assert sorted(removed) == sorted(k for k in self.model if k.startswith(prefix))
        for k in removed:
            del self.model[k]

    @invariant()
    def bounded_and_consistent(self) -> None:
        c = self.cache
        assert c.size_bytes <= c.budget_bytes and len(c) <= c.max_entries
        assert sorted(c) == sorted(self.model)
        assert c.size_bytes == sum(entry_size(k, len(m), len(b))
                                   for k, (m, b) in self.model.items())
        for k, (m, b) in self.model.items():
            e = c.peek(k)
            assert e is not None and e.meta == m and e.body == b


TestMemoryModel = MemoryModel.TestCase
TestMemoryModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
