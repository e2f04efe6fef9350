"""The edge's stored objects over its two tiers: memory (cache.MemoryCache) and the optional disk
tier (diskcache.DiskCache), plus the short-lived negative answers (404/5xx).

An object is a head entry under its cache key: meta = the RFC 9111 stored response, the body
length, and whether the body is held whole (in the same entry) or in pieces of `piece_bytes`,
each its own entry under `<key>\\x00<version>\\x00<n>`. The version is fresh per stored body, so
pieces of two upstream versions can never be mixed. Memory is looked up first; a disk hit is read
(checksummed) in a thread and promoted to memory. Every write goes to both tiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from edge360.cache.disk import DiskCache, DiskWriter
from edge360.cache.diskformat import EntryGone
from edge360.cache.memory import MemoryCache
from edge360.config.schema import EdgeConfig
from edge360.core.policy import StoredResponse
from edge360.node.counters import Counters, TierGauge

#: negative answers (404/5xx) kept at most; the oldest is dropped first
MAX_NEGATIVE = 10_000
#: body bytes of one negative answer kept at most (error pages are small)
MAX_NEGATIVE_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """The head of a stored object."""

    stored: StoredResponse
    length: int
    pieced: bool
    version: str
    piece_bytes: int

    def encode(self) -> bytes:
        return orjson.dumps({"s": self.stored.to_dict(), "n": self.length, "p": self.pieced,
                             "v": self.version, "pb": self.piece_bytes})

    @classmethod
    def decode(cls, meta: bytes) -> StoredObject | None:
        """None for a record this version cannot read (treated as a miss)."""
        try:
            d = orjson.loads(meta)
            return cls(StoredResponse.from_dict(d["s"]), int(d["n"]), bool(d["p"]), str(d["v"]),
                       int(d["pb"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def piece_key(self, key: str, n: int) -> str:
        return f"{key}\x00{self.version}\x00{n}"

    def pieces(self) -> int:
        return -(-self.length // self.piece_bytes) if self.pieced else 1

    def piece_span(self, n: int) -> tuple[int, int]:
        """Inclusive byte span of piece n."""
        start = n * self.piece_bytes
        return start, min(self.length, start + self.piece_bytes) - 1


def new_version() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Negative:
    status: int
    headers: dict[str, str]
    body: bytes
    expires: float


class EdgeStore:
    def __init__(self, config: EdgeConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self.memory = MemoryCache(config.cache_memory_bytes, config.max_entries)
        self.disk = DiskCache(config.cache_dir, config.cache_disk_bytes) if config.cache_dir \
            else None
        self._negative: OrderedDict[str, Negative] = OrderedDict()

    # -- heads -----------------------------------------------------------------------------

    async def lookup(self, key: str) -> tuple[StoredObject, bytes | None] | None:
        """The object's head and, for a whole object, its body; memory first, then disk."""
        entry = self.memory.get(key)
        if entry is not None:
            obj = StoredObject.decode(entry.meta)
            if obj is not None:
                return obj, None if obj.pieced else entry.body
            self.memory.pop(key)
        if self.disk is None:
            return None
        found = await asyncio.to_thread(self._disk_read, key, True)
        if found is None:
            return None
        meta, body = found
        obj = StoredObject.decode(meta)
        if obj is None:
            return None
        self._count(self.memory.put(key, meta, body), "memory")
        return obj, None if obj.pieced else body

    def peek(self, key: str) -> StoredObject | None:
        """The head if it is in memory (no I/O, no effect on recency)."""
        entry = self.memory.peek(key)
        return StoredObject.decode(entry.meta) if entry is not None else None

    def _disk_read(self, key: str, with_body: bool) -> tuple[bytes, bytes] | None:
        assert self.disk is not None
        entry = self.disk.get(key)
        if entry is None:
            return None
        try:
            return entry.meta, entry.read_body() if with_body else b""
        except (EntryGone, OSError):
            return None

    # -- pieces ----------------------------------------------------------------------------

    def has_piece(self, key: str, obj: StoredObject, n: int) -> bool:
        pk = obj.piece_key(key, n)
        return pk in self.memory or (self.disk is not None and pk in self.disk)

    async def piece(self, key: str, obj: StoredObject, n: int) -> bytes | None:
        pk = obj.piece_key(key, n)
        entry = self.memory.get(pk)
        if entry is not None:
            return entry.body
        if self.disk is None:
            return None
        found = await asyncio.to_thread(self._disk_read, pk, True)
        if found is None:
            return None
        self._count(self.memory.put(pk, found[0], found[1]), "memory")
        return found[1]

    # -- writes ----------------------------------------------------------------------------

    async def store(self, key: str, obj: StoredObject, body: bytes, *,
                    disk_done: bool = False) -> None:
        """Store a head with its whole body, or a pieced head (body split into pieces here;
        pass b"" when the pieces are stored separately). `disk_done`: a streaming writer
        already committed the whole object to disk."""
        self._negative.pop(key, None)
        meta = obj.encode()
        if obj.pieced:
            for n in range(obj.pieces() if body else 0):
                start, end = obj.piece_span(n)
                await self.store_piece(key, obj, n, body[start:end + 1])
            body = b""
        self._count(self.memory.put(key, meta, body), "memory")
        if self.disk is not None and not disk_done:
            self._count(await asyncio.to_thread(self.disk.put, key, meta, body), "disk")

    async def store_piece(self, key: str, obj: StoredObject, n: int, data: bytes) -> None:
        pk = obj.piece_key(key, n)
        self._count(self.memory.put(pk, b"", data), "memory")
        if self.disk is not None:
            self._count(await asyncio.to_thread(self.disk.put, pk, b"", data), "disk")

    async def refresh(self, key: str, obj: StoredObject, body: bytes | None) -> None:
        """New head fields for the same body (a 304 revalidation, RFC 9111 §4.3.4)."""
        meta = obj.encode()
        if not self.memory.update_meta(key, meta) and body is not None:
            self._count(self.memory.put(key, meta, body), "memory")
        if self.disk is not None and (obj.pieced or body is not None):
            data = b"" if obj.pieced else body or b""
            self._count(await asyncio.to_thread(self.disk.put, key, meta, data), "disk")

    def disk_writer(self, key: str, obj: StoredObject) -> DiskWriter | None:
        """A streaming disk writer for a whole body (blocking: call it in a thread)."""
        if self.disk is None:
            return None
        return self.disk.open_writer(key, obj.encode())

    def _count(self, evicted: list[str], tier: str) -> None:
        if evicted:
            self.counters.evictions[tier] += len(evicted)

    # -- removal ---------------------------------------------------------------------------

    async def purge(self, key: str) -> int:
        """Remove an object and its pieces from both tiers; 1 when something was removed."""
        removed = self.memory.pop(key) is not None
        removed = bool(self.memory.pop_prefix(key + "\x00")) or removed
        removed = self._negative.pop(key, None) is not None or removed
        if self.disk is not None:
            disk = self.disk
            removed = await asyncio.to_thread(disk.pop, key) or removed
            removed = bool(await asyncio.to_thread(disk.pop_prefix, key + "\x00")) or removed
        return int(removed)

    async def invalidate(self, key: str) -> int:
        """Remove one object without scanning anything (RFC 9111 §4.4 invalidation, which may
        come with every unsafe request): its head from both tiers by key, and its pieces by
        their exact keys when the head is known. A piece whose head is gone can never be
        served (every piece key carries its head's version); eviction reclaims it."""
        heads = [self.peek(key)]
        if heads[0] is None and self.disk is not None:
            found = await asyncio.to_thread(self._disk_read, key, False)
            heads = [StoredObject.decode(found[0]) if found is not None else None]
        obj = heads[0]
        piece_keys = [obj.piece_key(key, n) for n in range(obj.pieces())] \
            if obj is not None and obj.pieced else []
        removed = self.memory.pop(key) is not None
        removed = self._negative.pop(key, None) is not None or removed
        for pk in piece_keys:
            self.memory.pop(pk)
        if self.disk is not None:
            disk = self.disk

            def drop_files() -> bool:
                for pk in piece_keys:
                    disk.pop(pk)
                return disk.pop(key)
            removed = await asyncio.to_thread(drop_files) or removed
        return int(removed)

    async def purge_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; returns how many objects."""
        keys = {k.split("\x00", 1)[0] for k in self.memory.pop_prefix(prefix)}
        keys |= {k for k in list(self._negative) if k.startswith(prefix)}
        for k in [k for k in self._negative if k.startswith(prefix)]:
            del self._negative[k]
        if self.disk is not None:
            disk = self.disk
            keys |= {k.split("\x00", 1)[0]
                     for k in await asyncio.to_thread(disk.pop_prefix, prefix)}
        return len(keys)

    # -- negative answers ------------------------------------------------------------------

    def negative(self, key: str, now: float) -> Negative | None:
        neg = self._negative.get(key)
        if neg is None:
            return None
        if neg.expires <= now:
            del self._negative[key]
            return None
        return neg

    def put_negative(self, key: str, neg: Negative) -> None:
        self._negative.pop(key, None)
        self._negative[key] = neg
        while len(self._negative) > MAX_NEGATIVE:
            self._negative.popitem(last=False)

    def drop_negative(self, key: str) -> None:
        self._negative.pop(key, None)

    # -- figures ---------------------------------------------------------------------------

    def tiers(self) -> list[TierGauge]:
        out = [TierGauge("memory", self.memory.size_bytes, len(self.memory))]
        if self.disk is not None:
            out.append(TierGauge("disk", self.disk.size_bytes, len(self.disk)))
        return out

    async def describe(self, key: str, now: float) -> dict[str, object]:
        """An object's state for GET /admin/cache."""
        out: dict[str, object] = {"key": key, "tiers": []}
        tiers: list[str] = []
        meta: bytes | None = None
        entry = self.memory.peek(key)
        if entry is not None:
            tiers.append("memory")
            meta = entry.meta
        if self.disk is not None:
            found = await asyncio.to_thread(self._disk_read, key, False)
            if found is not None:
                tiers.append("disk")
                meta = meta or found[0]
        out["tiers"] = tiers
        neg = self._negative.get(key)
        if neg is not None:
            out["negative"] = {"status": neg.status, "expires_in": round(neg.expires - now, 3)}
        obj = StoredObject.decode(meta) if meta is not None else None
        if obj is not None:
            s = obj.stored
            with contextlib.suppress(Exception):
                out.update(status=s.status, length=obj.length, age=round(s.current_age(now), 3),
                           fresh=s.is_fresh(now), freshness_lifetime=s.freshness_lifetime,
                           etag=s.etag, pieced=obj.pieced)
            if obj.pieced:
                out["pieces"] = {"total": obj.pieces(), "cached": [
                    n for n in range(min(obj.pieces(), 100_000)) if self.has_piece(key, obj, n)]}
        return out
