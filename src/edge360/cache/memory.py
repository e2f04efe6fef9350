"""The memory tier of the edge cache: a byte-bounded, entry-bounded store of (meta, body) by key.

Policy: segmented LRU (SLRU). New entries enter the *probation* segment; a `get` hit on a
probation entry promotes it to the *protected* segment; when protected holds more than
`protected_fraction` of the budget its least recently used entries are demoted to the most
recently used end of probation. Eviction always takes probation's LRU end first and touches
protected only when probation is empty. A scan of one-hit keys (a crawler, a warm-up, one
viewer seeking through a title) therefore only churns probation and cannot flush the hot set.

Why SLRU and not W-TinyLFU: every operation here is O(1) with two OrderedDicts and no
frequency sketch to size, age or explain; for HLS the hot set (the live edge, the first
minutes of a VOD title, playlists) is exactly "requested more than once recently", which is
what SLRU protects. `put` is not a hit: a miss that stores must not promote its own object,
so callers should not `get` right after `put` for the same request.

Accounting: an entry costs len(body) + len(meta) + len(key) + ENTRY_OVERHEAD bytes. The
constant approximates CPython's per-entry cost (Entry object, two bytes headers, the key
str header, OrderedDict node and hash slot) so a budget of many small playlists is honest.
After `put` or `update_meta` returns, `size_bytes <= budget_bytes` and `len(self) <=
max_entries` always hold. Synchronous, no clock, no timers: callers keep time in `meta`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from edge360.cache.memfd import fd_of

#: bytes charged per entry on top of key, meta and body (see the module docstring)
ENTRY_OVERHEAD = 256


class Entry:
    """One stored object: `meta` is the caller's opaque blob, `body` is held once, as bytes or
    as a read-only view of a memfd mapping (cache.memfd)."""

    __slots__ = ("body", "meta", "size")

    def __init__(self, meta: bytes, body: bytes | memoryview, size: int) -> None:
        self.meta = meta
        self.body = body
        #: bytes charged against the budget for this entry
        self.size = size

    def whole(self) -> bytes:
        """The body as bytes (a body held in a memfd is copied out: the hit path sends such a
        body from its file instead, edge.held.from_whole)."""
        body = self.body
        return body if isinstance(body, bytes) else bytes(body)

    def view(self, start: int = 0, end: int | None = None) -> memoryview:
        """A zero-copy slice of the body, [start, end) (end None = to the end)."""
        return memoryview(self.body)[start:end]

    def __repr__(self) -> str:
        return f"Entry(meta={len(self.meta)}B, body={len(self.body)}B, size={self.size})"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the counters; `bytes`/`entries` are the current occupancy."""

    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    protected_bytes: int


def entry_size(key: str, meta_len: int, body_len: int) -> int:
    """What an entry of these sizes is charged against the budget."""
    return body_len + meta_len + len(key) + ENTRY_OVERHEAD


class MemoryCache:
    """Segmented-LRU byte store; see the module docstring for the policy and the accounting."""

    def __init__(self, budget_bytes: int, max_entries: int,
                 protected_fraction: float = 0.8) -> None:
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        if not 0.0 <= protected_fraction < 1.0:
            raise ValueError("protected_fraction must be in [0, 1)")
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self._protected_budget = int(budget_bytes * protected_fraction)
        # OrderedDict order is recency: first = least recently used, last = most recent
        self._probation: OrderedDict[str, Entry] = OrderedDict()
        self._protected: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._protected_bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    # -- lookups ----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry, counted as a hit (promotes from probation); None counts a miss."""
        entry = self._protected.get(key)
        if entry is not None:
            self._protected.move_to_end(key)
            self._hits += 1
            return entry
        entry = self._probation.pop(key, None)
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        self._protected[key] = entry
        self._protected_bytes += entry.size
        self._demote_overflow()
        return entry

    def peek(self, key: str) -> Entry | None:
        """The entry without any effect on the policy or the counters."""
        entry = self._protected.get(key)
        return entry if entry is not None else self._probation.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._probation

    def __len__(self) -> int:
        return len(self._protected) + len(self._probation)

    def __iter__(self) -> Iterator[str]:
        """Keys, coldest first (probation LRU to MRU, then protected LRU to MRU); a snapshot."""
        return iter([*self._probation, *self._protected])

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._evictions, self._bytes, len(self),
                          self._protected_bytes)

    def fits(self, size: int) -> bool:
        """Whether an object of `size` bytes (body + meta + key) could be stored at all."""
        return size + ENTRY_OVERHEAD <= self.budget_bytes

    # -- changes ----------------------------------------------------------------------------

    def put(self, key: str, meta: bytes, body: bytes | bytearray | memoryview) -> list[str]:
        """Store (or replace) key; returns the keys evicted to make room, never `key` itself.

        An object that cannot fit the whole budget is not stored (an old version under the
        same key is dropped, since it is stale) and nothing else is evicted.
        """
        held: bytes | memoryview
        if isinstance(body, memoryview) and fd_of(body) is not None:
            held = body  # a piece in a sealed memfd (cache.memfd): immutable already
        else:  # hold one immutable copy that slices can share
            held = body if type(body) is bytes else bytes(body)
        if type(meta) is not bytes:
            meta = bytes(meta)
        size = entry_size(key, len(meta), len(held))
        segment = self._remove(key)
        if size > self.budget_bytes:
            return []
        evicted = self._make_room(size)
        entry = Entry(meta, held, size)
        self._bytes += size
        if segment is self._protected:
            # a refreshed hot object (e.g. a live playlist) stays hot
            self._protected[key] = entry
            self._protected_bytes += size
            self._demote_overflow()
        else:
            self._probation[key] = entry
        return evicted

    def update_meta(self, key: str, meta: bytes) -> bool:
        """Replace only the meta (a 304 revalidation); False when the key is absent.

        The body is shared, not copied. If a larger meta needs room, colder entries are evicted
        (counted in stats); if the entry alone no longer fits the budget it is dropped (False).
        """
        segment = self._protected if key in self._protected else self._probation
        old = segment.get(key)
        if old is None:
            return False
        size = old.size - len(old.meta) + len(meta)
        if size > self.budget_bytes:
            self._remove(key)
            return False
        # a new Entry, so a response still streaming the old one keeps a consistent pair
        entry = Entry(bytes(meta), old.body, size)
        segment[key] = entry
        delta = size - old.size
        self._bytes += delta
        if segment is self._protected:
            self._protected_bytes += delta
        if self._bytes > self.budget_bytes:
            # shield the refreshed entry: take it out while making room, then put it back
            del segment[key]
            self._bytes -= size
            if segment is self._protected:
                self._protected_bytes -= size
            self._make_room(size)
            segment[key] = entry
            self._bytes += size
            if segment is self._protected:
                self._protected_bytes += size
        if segment is self._protected:
            self._demote_overflow()
        return True

    def pop(self, key: str) -> Entry | None:
        """Remove and return the entry (not counted as an eviction)."""
        entry = self.peek(key)
        if entry is not None:
            self._remove(key)
        return entry

    def pop_prefix(self, prefix: str) -> list[str]:
        """Remove every key starting with prefix (a purge; scans at most max_entries keys)."""
        keys = [k for k in (*self._probation, *self._protected) if k.startswith(prefix)]
        for k in keys:
            self._remove(k)
        return keys

    def clear(self) -> None:
        """Drop everything (counters are kept)."""
        self._probation.clear()
        self._protected.clear()
        self._bytes = self._protected_bytes = 0

    # -- internals --------------------------------------------------------------------------

    def _remove(self, key: str) -> OrderedDict[str, Entry] | None:
        """Unlink key from whichever segment holds it; returns that segment."""
        entry = self._probation.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            return self._probation
        entry = self._protected.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            self._protected_bytes -= entry.size
            return self._protected
        return None

    def _make_room(self, size: int) -> list[str]:
        """Evict coldest-first until `size` more bytes and one more entry fit."""
        evicted: list[str] = []
        while self._bytes + size > self.budget_bytes or len(self) >= self.max_entries:
            if self._probation:
                key, entry = self._probation.popitem(last=False)
            elif self._protected:
                key, entry = self._protected.popitem(last=False)
                self._protected_bytes -= entry.size
            else:  # unreachable while size <= budget: an empty cache has room
                break
            self._bytes -= entry.size
            self._evictions += 1
            evicted.append(key)
        return evicted

    def _demote_overflow(self) -> None:
        """Move protected LRU entries to probation's MRU end while protected is over its share."""
        # keep at least one entry: the one just promoted must not bounce straight back
        while self._protected_bytes > self._protected_budget and len(self._protected) > 1:
            key, entry = self._protected.popitem(last=False)
            self._protected_bytes -= entry.size
            self._probation[key] = entry
