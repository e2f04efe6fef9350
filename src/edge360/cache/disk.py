"""The disk tier of the edge cache: (meta, body) by key in files that survive a restart.

Layout `<dir>/ab/cd/<blake2b-160 hex of key>.e360`; a file is `header | key | body | meta`
(meta trails the body so a streamed body is written before its final meta is known; commit
rewrites the fixed-size header). The header holds magic, version, key/meta/body lengths, the
body's crc32, a random nonce (two versions of one key differ) and a crc32 of header + key +
meta. A file with a bad magic/version/crc, a key not hashing to its name, or a size other
than header + key + body + meta is deleted (at start, `rescan` or `get`), never served; the
body crc is checked by `read_body`, and by `open_body` once per file version.

Writes go to `<name>.<pid>.<random>.tmp` beside the final name, flock'ed while open, renamed
into place on commit: readers see the old or the new file, never a partial one. No fsync by
default (`fsync=True` enables it): a file torn by power loss fails the checks and is dropped.
Temp files of a dead writer (SIGKILL) are removed at start (their flock was released; where
flock is unsupported, the pid in the name is checked).

Processes: each worker keeps its own LRU index (from file mtimes, which `get` refreshes at most
once a minute: TOUCH_NS); an index miss still probes the file, so workers share what any
stored. The budget is per process over the files it knows, approximate across workers
(`rescan` converges). Blocking I/O by design; a lock guards the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from edge360.cache.diskformat import (
    _HEAD,
    ENTRY_EXT,
    HEADER_SIZE,
    MAGIC,
    TEMP_EXT,
    VERSION,
    CheckedVersions,
    DiskEntry,
    EntryGone,
    OpenBody,
    _key_bytes,
    _parse_fd,
    _parse_path,
    _Parsed,
    _same_file,
    _unlink,
    key_digest,
)

#: a hit moves its file's mtime (its place in the order a restart rebuilds) at most this often
TOUCH_NS = 60 * 10**9


@dataclass(frozen=True, slots=True)
class DiskStats:
    """A snapshot of the counters; `bytes`/`entries` are this process's index."""

    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    corrupt_removed: int
    temps_removed: int


class DiskWriter:
    """Streams one body into a temp file; `commit` renames it into place, `abort` drops it.

    A body outgrowing the budget is dropped at once (`discarded`; later writes are ignored;
    commit stores nothing). As a context manager, leaving without a commit aborts.
    """

    def __init__(self, cache: DiskCache, key: str, meta: bytes) -> None:
        self._cache, self.key, self._meta = cache, key, bytes(meta)
        self._raw_key = _key_bytes(key)
        self._final = cache.path_for(key)
        self._temp = f"{self._final}.{os.getpid()}.{secrets.token_hex(6)}{TEMP_EXT}"
        os.makedirs(os.path.dirname(self._final), exist_ok=True)
        self._file: IO[bytes] | None = open(self._temp, "xb")  # noqa: SIM115 - see _close
        # held until after the rename, so a start-up scan never reaps a live writer's file;
        # where flock is unsupported the reaper checks the pid in the name instead
        with contextlib.suppress(OSError):
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.bytes_written = self._crc = 0
        self.discarded = self._done = False
        self._file.write(bytes(HEADER_SIZE) + self._raw_key)  # the header is written on commit

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append body bytes (ignored once discarded)."""
        if self._done:
            raise ValueError("writer already committed or aborted")
        if self._file is None:
            return
        self.bytes_written += memoryview(chunk).nbytes
        if not self._cache.fits(self.bytes_written + len(self._raw_key) + len(self._meta)):
            self.discarded = True
            self._close()
            return
        self._crc = zlib.crc32(chunk, self._crc)
        self._file.write(chunk)

    def commit(self, final_meta: bytes | None = None) -> list[str]:
        """Store the entry under its key; returns the keys evicted to make room."""
        if self._done:
            raise ValueError("writer already committed or aborted")
        self._done = True
        meta = self._meta if final_meta is None else bytes(final_meta)
        size = HEADER_SIZE + len(self._raw_key) + self.bytes_written + len(meta)
        f = self._file
        try:
            if f is None or size > self._cache.budget_bytes:
                self._cache.pop(self.key)  # an older version is stale now, as in memory
                return []
            f.write(meta)
            head = _HEAD.pack(MAGIC, VERSION, 0, len(self._raw_key), len(meta),
                              self.bytes_written, self._crc, secrets.randbits(64), 0)
            hcrc = zlib.crc32(meta, zlib.crc32(self._raw_key, zlib.crc32(head[:-4])))
            f.seek(0)
            f.write(head[:-4] + struct.pack("<I", hcrc))
            f.flush()
            if self._cache.fsync:
                os.fsync(f.fileno())
            return self._cache._install(self.key, self._temp, self._final, size)
        finally:
            self._close()  # after the rename the temp name is already gone

    def abort(self) -> None:
        """Drop the partial file; nothing is stored. Safe to call more than once."""
        self._done = True
        self._close()

    def _close(self) -> None:
        """Unlink the temp name (if still there), then close (releasing the flock)."""
        if self._file is not None:
            _unlink(self._temp)
            with contextlib.suppress(OSError):  # a failed flush of a dropped file is moot
                self._file.close()
            self._file = None

    def __enter__(self) -> DiskWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            self.abort()


class DiskCache:
    """Byte-bounded LRU of entry files in one directory; see the module docstring."""

    def __init__(self, directory: str | Path, budget_bytes: int, *, fsync: bool = False) -> None:
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.fsync = fsync
        self._lock = threading.RLock()  # reentrant: rescan holds it while _scan counts
        # key -> file size, first = least recently used (the path is derived from the key)
        self._index: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._corrupt = self._temps = 0
        self._checked = CheckedVersions()
        self.rescan()

    def path_for(self, key: str) -> str:
        digest = key_digest(key)
        return os.path.join(self.directory, digest[:2], digest[2:4], digest + ENTRY_EXT)

    def fits(self, size: int) -> bool:
        """Whether an object of `size` bytes (body + meta + key) could be stored at all."""
        return HEADER_SIZE + size <= self.budget_bytes

    def get(self, key: str) -> DiskEntry | None:
        """The entry, refreshing its recency; None when absent, deleted by another process,
        corrupt (then deleted) or a colliding key's."""
        found = self._find(key, keep_open=False)
        return found[0].entry if found is not None else None

    def _find(self, key: str, *, keep_open: bool) -> tuple[_Parsed, int] | None:
        """As `get`, with the file still open when `keep_open` (the caller closes it)."""
        path, p = self.path_for(key), None
        for _attempt in range(3):  # replaced while we read it: read the new one
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            kept = False
            try:
                p = _parse_fd(fd, path, None)
                with self._lock:  # decide under the lock, so no eviction or install interleaves
                    if not _same_file(path, fd):
                        continue
                    if p is None:  # committed files are whole, so this is real corruption
                        self._corrupt += _unlink(path)
                    if p is None or p.entry.key != key:
                        break
                    self._hits += 1
                    self._bytes += p.size - self._index.pop(key, 0)
                    self._index[key] = p.size
                kept = keep_open
            finally:
                if not kept:
                    os.close(fd)
            if abs(time.time_ns() - p.mtime_ns) > TOUCH_NS:  # the LRU order a restart rebuilds
                with contextlib.suppress(OSError):
                    os.utime(path)
            return p, fd if kept else -1
        with self._lock:
            self._misses += 1
            # gone, or a colliding key's; a file installed since our open keeps its entry
            if not os.path.exists(path) or (p is not None and p.entry.key != key):
                self._drop_locked(key)
        return None

    def open_body(self, key: str) -> OpenBody | None:
        """The entry's body as an open file span (for sendfile) with its meta; None when absent,
        gone or corrupt (then deleted). The file sent is the one found (one open). Its crc is
        checked on the first open of each file version in this process, not on every one: an
        installed file is never written in place (commit renames a finished temp file over the
        name), so the version open here stays the bytes that were checked, even if the name is
        replaced or deleted meanwhile."""
        try:
            found = self._find(key, keep_open=True)
            if found is None:
                return None
            entry, mark = found[0].entry, found[0].mark
            f = os.fdopen(found[1], "rb", buffering=0)
        except (EntryGone, OSError):
            return None
        try:
            with self._lock:
                known = self._checked.known(mark)
            if not known:
                if not entry.body_matches(f.fileno()):
                    with self._lock:
                        if _same_file(entry.path, f.fileno()):
                            self._corrupt += _unlink(entry.path)
                            self._drop_locked(key)
                    f.close()
                    return None
                with self._lock:
                    self._checked.add(mark)
            else:
                # the send reads the page cache on the event loop: have the kernel start reading
                # what is not there now, from this worker thread (a fresh check just read it all)
                with contextlib.suppress(OSError, AttributeError):  # not Linux: no advice
                    os.posix_fadvise(f.fileno(), entry.body_offset, entry.body_length,
                                     os.POSIX_FADV_WILLNEED)
        except OSError:
            f.close()
            return None
        return OpenBody(f, entry.body_offset, entry.body_length, entry.meta)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._index))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def stats(self) -> DiskStats:
        with self._lock:
            return DiskStats(self._hits, self._misses, self._evictions, self._bytes,
                             len(self._index), self._corrupt, self._temps)

    def open_writer(self, key: str, meta: bytes) -> DiskWriter:
        """A streaming writer for key; nothing is visible until its commit."""
        return DiskWriter(self, key, meta)

    def put(self, key: str, meta: bytes, body: bytes) -> list[str]:
        """Store (or replace) key; returns the keys evicted. Too big: not stored, old dropped."""
        with self.open_writer(key, meta) as w:
            w.write(body)
            return w.commit()

    def pop(self, key: str) -> bool:
        """Delete key's file (whoever wrote it); True when a file was removed."""
        path = self.path_for(key)
        with self._lock:
            self._drop_locked(key)
            try:
                parsed = _parse_path(path, None)
            except FileNotFoundError:
                return False
            if parsed is not None and parsed.entry.key != key:
                return False  # a colliding key's file: not ours to delete
            return _unlink(path)

    def pop_prefix(self, prefix: str) -> list[str]:
        """Delete every entry whose key starts with prefix, found by reading every file header
        (so what other workers wrote is purged too; the lock is held throughout); returns the
        keys removed."""
        with self._lock:
            removed = {f.entry.key for f in self._scan()
                       if f.entry.key.startswith(prefix) and _unlink(f.entry.path)}
            removed.update(k for k in self._index if k.startswith(prefix))
            for key in removed:
                self._drop_locked(key)
        return sorted(removed)

    def rescan(self) -> list[str]:
        """Rebuild the index from the directory (recency from mtimes), deleting corrupt files
        and dead writers' temp files, then evict down to the budget; returns evicted keys."""
        with self._lock:  # held throughout: no put or eviction of ours can interleave
            found = sorted(self._scan(), key=lambda f: f.mtime_ns)
            self._index = OrderedDict((f.entry.key, f.size) for f in found)
            self._bytes = sum(self._index.values())
            return self._evict_locked()

    def shrink(self, budget_bytes: int) -> list[str]:
        """Lower the budget (a full filesystem holds less than configured) and evict down to
        it; returns the keys evicted. The budget never grows back without a restart."""
        with self._lock:
            self.budget_bytes = max(1, min(self.budget_bytes, budget_bytes))
            return self._evict_locked()

    def _install(self, key: str, temp: str, final: str, size: int) -> list[str]:
        """Rename a finished temp file into place and account for it (called by commit)."""
        with self._lock:
            try:
                os.replace(temp, final)
            except FileNotFoundError:
                return []  # a scan reaped the temp in the instant before our flock: not stored
            self._bytes += size - self._index.pop(key, 0)
            self._index[key] = size
            return self._evict_locked()

    def _drop_locked(self, key: str) -> None:
        self._bytes -= self._index.pop(key, 0)

    def _evict_locked(self) -> list[str]:
        evicted: list[str] = []
        # the newest entry sits at the MRU end and fits alone, so it is never its own victim
        while self._bytes > self.budget_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._bytes -= size
            _unlink(self.path_for(key))
            self._evictions += 1
            evicted.append(key)
        return evicted

    def _scan(self) -> Iterator[_Parsed]:
        """Every valid entry file; deletes corrupt ones and dead writers' temp files."""
        hexdir, root = "[0-9a-f]" * 2, glob.escape(str(self.directory))
        for path in glob.iglob(os.path.join(root, hexdir, hexdir, "*")):
            name = os.path.basename(path)
            if name.endswith(TEMP_EXT):
                self._temps += _reap_temp(path, name)
            elif name.endswith(ENTRY_EXT):  # anything else is not ours: left alone
                try:
                    parsed = _parse_path(path, name[: -len(ENTRY_EXT)])
                except FileNotFoundError:
                    continue  # another process evicted it meanwhile
                if parsed is None:
                    self._corrupt += _unlink(path)
                else:
                    yield parsed


def _reap_temp(path: str, name: str) -> bool:
    """Delete a temp file whose writer is dead (the kernel dropped its flock); True if so."""
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live writer holds it
            except OSError:  # no flock on this file system: is the pid in the name alive?
                try:
                    os.kill(int(name.split(".")[-3]), 0)
                    return False
                except PermissionError:
                    return False  # alive, another user's
                except (ProcessLookupError, ValueError, IndexError):
                    pass
            return _unlink(path)
    except FileNotFoundError:
        return False  # committed or aborted meanwhile
