"""The edge's stored objects over its two tiers: memory (cache.memory) and the optional disk tier
(cache.disk), plus the short-lived negative answers (404/5xx).

An object is a head entry under its cache key: meta = the RFC 9111 stored response, the body
length, and whether the body is held whole (in the same entry) or in pieces of `piece_bytes`,
each its own entry under `<key>\\x00<version>\\x00<n>`. The version is fresh per stored body, so
pieces of two upstream versions are never mixed; pieces are fetched separately only for an object
with a strong validator (`StoredObject.strong`, docs/ARCHITECTURE.md "Never a wrong byte").

The disk tier is an optimisation, never a point of failure: a write that fails (a full
filesystem, EIO) drops that object from the disk tier, the answer goes on from memory, the failure
is counted (`edge360_cache_write_errors_total{tier}`) and logged once a minute at most, and after
ENOSPC the tier's budget shrinks to what the filesystem holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from edge360.cache.disk import DiskCache, DiskWriter
from edge360.cache.diskformat import EntryGone, OpenBody
from edge360.cache.memfd import hold
from edge360.cache.memory import MemoryCache
from edge360.config.schema import EdgeConfig
from edge360.core.kinds import PLAYLIST, kind_of
from edge360.core.lru import Memo
from edge360.edge.stored import StoredObject
from edge360.node.counters import Counters, TierGauge

log = logging.getLogger("edge360.edge")

#: negative answers (404/5xx) kept at most; the oldest is dropped first
MAX_NEGATIVE: Final = 10_000
#: body bytes of one negative answer kept at most (error pages are small)
MAX_NEGATIVE_BODY: Final = 64 * 1024
#: whole bodies of at least this many bytes found only on disk are sent from their files (with
#: sendfile, not copied into memory); smaller ones are read and kept in memory for the next hit
FILE_FROM: Final = 256 * 1024
#: seconds between two log lines about failing disk writes
LOG_EVERY: Final = 60.0
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
#: an object found on disk this recently (seconds) is looked up on the loop's thread, as nginx
#: opens its cache files (its inode and head are in the page cache; the thread hop cost more
#: than the lookup); any other in a worker thread (docs/ARCHITECTURE.md, "One content plane")
WARM_S: Final = 10.0
#: objects remembered as recently found on disk
MAX_WARM: Final = 65_536
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Negative:
    status: int
    headers: dict[str, str]
    body: bytes
    expires: float
    #: when it arrived (the node's clock): its Age
    received: float = 0.0


class EdgeStore:
    def __init__(self, config: EdgeConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self.memory = MemoryCache(config.cache_memory_bytes, config.max_entries)
        self.disk = DiskCache(config.cache_dir, config.cache_disk_bytes) if config.cache_dir \
            else None
        self._negative: OrderedDict[str, Negative] = OrderedDict()
        self._logged = -LOG_EVERY
        self._warm: Memo[str, float] = Memo(MAX_WARM)  # key -> when last found on disk

    # -- heads -----------------------------------------------------------------------------

    async def lookup(self, key: str) -> tuple[StoredObject, bytes | None] | None:
        """The object's head and, for a whole object, its body; memory first, then disk (a hit
        there is put into memory)."""
        found = await self.lookup_or_open(key, None)
        if found is None:
            return None
        obj, body = found
        assert not isinstance(body, OpenBody)  # opened only from `file_from` bytes
        return obj, body

    async def lookup_or_open(self, key: str, file_from: int | None
                             ) -> tuple[StoredObject, bytes | OpenBody | None] | None:
        """As `lookup`; with `file_from`, a whole body of at least that many bytes that only
        the disk holds comes as its open file instead, sent with sendfile and not copied into
        memory (as pieces are, edge.piecesource); the caller closes it."""
        entry = self.memory.get(key)
        if entry is not None:
            obj = StoredObject.decode(entry.meta)
            if obj is not None:
                return obj, None if obj.pieced else entry.whole()
            self.memory.pop(key)
        if self.disk is None:
            return None
        found = await self._on_disk(key, self._disk_lookup, key, file_from)
        if found is None:
            return None
        meta, obj, body = found
        if not isinstance(body, OpenBody):
            self._count(self.memory.put(key, meta, body), "memory")
        return obj, None if obj.pieced else body

    def _disk_lookup(self, key: str, file_from: int | None
                     ) -> tuple[bytes, StoredObject, bytes | OpenBody] | None:
        assert self.disk is not None
        # one open of the file whatever comes of it: its body is sent from it, or read from it
        # (checked once per file version, as every body sent from the disk tier is)
        opened = self.disk.open_body(key)
        if opened is None:
            return None
        obj = StoredObject.decode(opened.meta)
        if obj is not None and file_from is not None and not obj.pieced \
                and opened.length >= file_from:
            return opened.meta, obj, opened
        try:
            return None if obj is None else (opened.meta, obj, opened.read())
        except (EntryGone, OSError):
            return None
        finally:
            opened.close()

    def peek(self, key: str) -> StoredObject | None:
        """The head if it is in memory (no I/O, no effect on recency)."""
        entry = self.memory.peek(key)
        return StoredObject.decode(entry.meta) if entry is not None else None

    def _disk_read(self, key: str, with_body: bool) -> tuple[bytes, bytes] | None:
        assert self.disk is not None
        try:
            entry = self.disk.get(key)
            if entry is None:
                return None
            return entry.meta, entry.read_body() if with_body else b""
        except (EntryGone, OSError):
            return None

    # -- pieces ----------------------------------------------------------------------------

    def has_piece(self, key: str, obj: StoredObject, n: int) -> bool:
        pk = obj.piece_key(key, n)
        return pk in self.memory or (self.disk is not None and pk in self.disk)

    def piece_in_memory(self, key: str, obj: StoredObject, n: int) -> bytes | memoryview | None:
        """Piece n if the memory tier holds it (counted as a hit there)."""
        entry = self.memory.get(obj.piece_key(key, n))
        return entry.body if entry is not None else None

    async def piece(self, key: str, obj: StoredObject, n: int) -> bytes | memoryview | None:
        """Piece n from memory, else from disk (checksummed, then kept in memory)."""
        found = self.piece_in_memory(key, obj, n)
        if found is not None or self.disk is None:
            return found
        pk = obj.piece_key(key, n)
        disk = await asyncio.to_thread(self._disk_read, pk, True)
        if disk is None:
            return None
        held = hold(disk[1])
        self._count(self.memory.put(pk, disk[0], held), "memory")
        return held

    async def open_pieces(self, key: str, obj: StoredObject, ns: Sequence[int]
                          ) -> dict[int, OpenBody]:
        """Those of pieces `ns` the disk tier holds, as open files for sendfile, opened in one
        worker-thread call (a thread hop per piece measured as a fifth of the loop's time)."""
        if self.disk is None or not ns:
            return {}
        return await self._on_disk(key, self._disk_open, key, obj, ns)

    async def _on_disk(self, key: str, fn: Callable[..., T], *args: object) -> T:
        """fn(*args), a disk-tier read for `key`: on the loop's thread when `key` was found on
        disk lately (WARM_S), else in a worker thread."""
        now = time.monotonic()
        seen = self._warm.get(key)
        if seen is not None and now - seen < WARM_S:
            found = fn(*args)
        else:
            found = await asyncio.to_thread(fn, *args)
        if found:
            self._warm.put(key, now)
        return found

    def _disk_open(self, key: str, obj: StoredObject, ns: Sequence[int]) -> dict[int, OpenBody]:
        assert self.disk is not None
        found: dict[int, OpenBody] = {}
        for n in ns:
            with contextlib.suppress(OSError):
                body = self.disk.open_body(obj.piece_key(key, n))
                if body is not None:
                    found[n] = body
        return found

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
        # a whole segment goes out with sendfile too (cache.memfd); a playlist stays bytes, as
        # every viewer's copy is rendered from them
        held = body if kind_of(key.partition("?")[0]) == PLAYLIST else hold(body)
        self._count(self.memory.put(key, meta, held), "memory")
        if self.disk is not None and not disk_done:
            await self._disk_write(key, self.disk.put, key, meta, body)

    async def store_piece(self, key: str, obj: StoredObject, n: int, data: bytes) -> None:
        pk = obj.piece_key(key, n)
        self._count(self.memory.put(pk, b"", hold(data)), "memory")
        if self.disk is not None:
            await self._disk_write(key, self.disk.put, pk, b"", data)

    async def refresh(self, key: str, obj: StoredObject, body: bytes | None) -> None:
        """New head fields for the same body (a 304 revalidation, RFC 9111 §4.3.4)."""
        meta = obj.encode()
        if not self.memory.update_meta(key, meta) and body is not None:
            self._count(self.memory.put(key, meta, body), "memory")
        if self.disk is not None and (obj.pieced or body is not None):
            data = b"" if obj.pieced else body or b""
            await self._disk_write(key, self.disk.put, key, meta, data)

    async def disk_writer(self, key: str, obj: StoredObject) -> DiskWriter | None:
        """A streaming disk writer for a whole body; None without a disk tier or when the disk
        refused to open one (counted like any failed write)."""
        if self.disk is None:
            return None
        return await self._disk_write(key, self.disk.open_writer, key, obj.encode())

    async def disk_step(self, key: str, step: Callable[[], T]) -> T | None:
        """One blocking step of a streaming disk write (write, commit, abort) in a thread; a
        failure drops the object from the disk tier and returns None."""
        return await self._disk_write(key, step)

    async def _disk_write(self, key: str, fn: Callable[..., T], *args: object) -> T | None:
        try:
            result = await asyncio.to_thread(fn, *args)
        except OSError as e:
            await asyncio.to_thread(self._forget, key, e)
            self._disk_failed(e)
            return None
        if isinstance(result, list):
            self._count(result, "disk")
        return result

    def _forget(self, key: str, error: OSError) -> None:
        """After a failed write (blocking): the object leaves the disk tier (a partial file
        never lands: writers write to a temp name), and a full filesystem shrinks the tier's
        budget to what it holds now."""
        disk = self.disk
        assert disk is not None
        with contextlib.suppress(OSError):
            disk.pop(key)
        if error.errno in _FULL:
            disk.shrink(max(disk.size_bytes, 1))

    def _disk_failed(self, error: OSError) -> None:
        """Count a failed disk write; log it at most once a minute."""
        disk = self.disk
        assert disk is not None
        self.counters.cache_write_errors["disk"] += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            log.warning("disk tier write failed (%s); serving from memory, disk budget now %d "
                        "bytes", error.strerror or error, disk.budget_bytes)

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

    def drop_pieces(self, key: str, obj: StoredObject, count: int) -> None:
        """Forget the first `count` pieces of a version that will never get its head (a body
        that broke off or failed its checks) from memory; on disk eviction takes them."""
        for n in range(count):
            self.memory.pop(obj.piece_key(key, n))

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
