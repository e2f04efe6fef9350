"""The disk tier's file format: `header | key | body | meta`, its checks, and reading a file.

The header holds magic, version, key/meta/body lengths, the body's crc32, a random nonce and a
crc32 of header + key + meta; a file failing any check is treated as absent (diskcache deletes
it). Pure file reading: no index, no locks (those are diskcache's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, NamedTuple

MAGIC = b"E36D"
VERSION = 1
# magic, version, flags, key_len, meta_len, body_len, body_crc, nonce, head_crc
_HEAD = struct.Struct("<4sHHIIQIQI")
HEADER_SIZE = _HEAD.size
ENTRY_EXT = ".e360"
TEMP_EXT = ".tmp"
MAX_KEY_BYTES = 64 * 1024
#: bytes read per step when a body's crc is checked without keeping it
CHECK_CHUNK = 1 << 20


class EntryGone(FileNotFoundError):
    """The file version a DiskEntry names was deleted, replaced or found corrupt: a miss."""


def key_digest(key: str) -> str:
    return hashlib.blake2b(_key_bytes(key), digest_size=20).hexdigest()


def _key_bytes(key: str) -> bytes:
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_KEY_BYTES:
        raise ValueError(f"cache key longer than {MAX_KEY_BYTES} bytes")
    return raw


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise EntryGone("file shorter than its header says")
        parts.append(chunk)
        length, offset = length - len(chunk), offset + len(chunk)
    return b"".join(parts)


def _same_file(path: str, fd: int) -> bool:
    """Whether path still names the file open as fd (not deleted or replaced since)."""
    with contextlib.suppress(FileNotFoundError):
        return os.path.samestat(os.stat(path), os.fstat(fd))
    return False


def _unlink(path: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        return True
    return False


@dataclass(frozen=True, slots=True)
class DiskEntry:
    """One file version found by `get`: meta in memory, the body read on demand. Each read
    re-opens `path` and checks the header is the one `get` saw: a file replaced or deleted
    since raises EntryGone (a miss), never wrong bytes. sendfile: use `open_file()`."""

    key: str
    meta: bytes
    path: str
    body_offset: int
    body_length: int
    body_crc: int
    header: bytes

    def open_file(self) -> IO[bytes]:
        """The file, opened unbuffered and verified to be this version (caller closes)."""
        try:
            f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise EntryGone(self.path) from None
        if os.pread(f.fileno(), HEADER_SIZE, 0) != self.header:
            f.close()
            raise EntryGone(self.path)
        return f

    def read_range(self, start: int, end: int) -> bytes:
        """Body bytes [start, end) (end exclusive, within the body)."""
        if not 0 <= start <= end <= self.body_length:
            raise ValueError(f"range {start}-{end} outside a body of {self.body_length}")
        with self.open_file() as f:
            return _pread_exact(f.fileno(), end - start, self.body_offset + start)

    def body_matches(self, fd: int) -> bool:
        """Whether the body in open file `fd` has its crc (read in chunks, nothing kept)."""
        crc, offset, left = 0, self.body_offset, self.body_length
        while left > 0:
            chunk = os.pread(fd, min(CHECK_CHUNK, left), offset)
            if not chunk:
                return False
            crc = zlib.crc32(chunk, crc)
            offset, left = offset + len(chunk), left - len(chunk)
        return crc == self.body_crc

    def read_body(self, verify: bool = True) -> bytes:
        """The whole body; with verify, a body failing its crc deletes the file (EntryGone)."""
        with self.open_file() as f:
            body = _pread_exact(f.fileno(), self.body_length, self.body_offset)
            if verify and zlib.crc32(body) != self.body_crc:
                if _same_file(self.path, f.fileno()):  # not a newer version at the same path
                    _unlink(self.path)
                raise EntryGone(f"body checksum mismatch: {self.path}")
        return body


class OpenBody:
    """An entry's body in an open file, for sendfile: `length` bytes of `file` from `offset`,
    and the entry's `meta`. The caller closes it (`close` may be called more than once)."""

    __slots__ = ("file", "length", "meta", "offset")

    def __init__(self, file: IO[bytes], offset: int, length: int, meta: bytes) -> None:
        self.file, self.offset, self.length, self.meta = file, offset, length, meta

    def read(self) -> bytes:
        """The whole body, from the open file."""
        return _pread_exact(self.file.fileno(), self.length, self.offset)

    def close(self) -> None:
        self.file.close()


class CheckedVersions:
    """The file versions whose body crc this process has checked, by (device, inode, header):
    the header holds a random nonce, so a new version is never taken for a checked one, even on
    a reused inode. Bounded: the least recently used are forgotten (and checked again)."""

    def __init__(self, limit: int = 65_536) -> None:
        self._limit = limit
        self._seen: OrderedDict[tuple[int, int, bytes], None] = OrderedDict()

    def known(self, mark: tuple[int, int, bytes]) -> bool:
        if mark in self._seen:
            self._seen.move_to_end(mark)
            return True
        return False

    def add(self, mark: tuple[int, int, bytes]) -> None:
        self._seen[mark] = None
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)


class _Parsed(NamedTuple):
    entry: DiskEntry
    size: int
    mtime_ns: int
    mark: tuple[int, int, bytes]  # (device, inode, header): this file version (CheckedVersions)


def _parse_fd(fd: int, path: str, digest: str | None) -> _Parsed | None:
    """The entry if the file is complete and consistent (named `digest`, if given); else None."""
    st = os.fstat(fd)
    if st.st_size < HEADER_SIZE:
        return None
    header = os.pread(fd, HEADER_SIZE, 0)
    if len(header) != HEADER_SIZE:
        return None
    magic, version, _flags, klen, mlen, blen, bcrc, _nonce, hcrc = _HEAD.unpack(header)
    if (magic, version) != (MAGIC, VERSION) or st.st_size != HEADER_SIZE + klen + blen + mlen:
        return None
    try:
        raw_key = _pread_exact(fd, klen, HEADER_SIZE)
        meta = _pread_exact(fd, mlen, HEADER_SIZE + klen + blen)
        key = raw_key.decode("utf-8", "surrogatepass")
    except (EntryGone, UnicodeDecodeError):
        return None
    if zlib.crc32(meta, zlib.crc32(raw_key, zlib.crc32(header[:-4]))) != hcrc:
        return None
    if klen > MAX_KEY_BYTES or (digest is not None and key_digest(key) != digest):
        return None
    entry = DiskEntry(key, meta, path, HEADER_SIZE + klen, blen, bcrc, header)
    return _Parsed(entry, st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino, header))


def _parse_path(path: str, digest: str | None) -> _Parsed | None:
    """As _parse_fd; raises FileNotFoundError when there is no file."""
    with open(path, "rb", buffering=0) as f:
        return _parse_fd(f.fileno(), path, digest)
