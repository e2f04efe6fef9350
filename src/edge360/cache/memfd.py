"""Piece bodies of the memory tier held in sealed memfd files, so that an answer over plain TCP
hands them to the kernel with sendfile instead of copying them out of Python's memory.

Why (docs/ARCHITECTURE.md, "One content plane"): on 8 MiB hits from memory the copy of each
byte into the socket (`_copy_from_iter`) was 57 % of the edge's CPU; nginx sends its cache
files with sendfile, which only hands the kernel references to pages. A piece held here is a
read-only memoryview of a shared mapping of its memfd: Python code reads it like bytes (TLS,
hashing, a flight's fallback), and `fd_of` gives the descriptor a sendfile reads from.

Lifetime: the descriptor is closed when the mapping is collected, that is when no entry of the
memory tier and no answer in flight (each holds a view of the mapping) refers to it any more. A
piece evicted while an answer is sending it stays readable until that answer lets go, so
sendfile never reads a closed or reused descriptor. The file is sealed against writes and size
changes once filled: its bytes can never change under a reader.

Descriptors: a held piece costs two (the memfd, and the one its mapping keeps), and clients need
descriptors too. So at most MAX_HELD pieces, and never more than an eighth of the process's
descriptor limit, are held at once; past that, and where memfd does not exist or a file cannot
be made (the kernel's shmem limits), the bytes are kept as they are and answers write them as
before.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import resource
import weakref
from typing import Final

#: bodies smaller than this stay bytes: a file and a mapping per small body cost more than the
#: copy they would save
MIN_BYTES: Final = 64 * 1024
#: pieces held in memfds at once at most (2 MiB pieces: 8 GiB of the memory tier)
MAX_HELD: Final = 4096
_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

#: mapping -> its memfd (removed, and the descriptor closed, when the mapping is collected)
_FDS: weakref.WeakKeyDictionary[mmap.mmap, int] = weakref.WeakKeyDictionary()


def hold(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """`data` in a sealed memfd, as a read-only view of its mapping; `data` as bytes when it is
    small or no memfd can be made."""
    if len(data) >= MIN_BYTES and hasattr(os, "memfd_create") and len(_FDS) < _room():
        with contextlib.suppress(OSError):
            return _mapped(memoryview(data))
    return data if isinstance(data, bytes) else bytes(data)


def _mapped(view: memoryview) -> memoryview:
    """`view` copied into a new memfd, sealed, and mapped read-only; raises OSError."""
    fd = os.memfd_create("edge360-piece", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mapping = mmap.mmap(fd, len(view), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError:
        os.close(fd)
        raise
    _FDS[mapping] = fd
    weakref.finalize(mapping, os.close, fd)
    return memoryview(mapping)


def _room() -> int:
    """How many pieces may be held now (the descriptor limit may be raised at start)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_HELD if soft == resource.RLIM_INFINITY else min(MAX_HELD, soft // 8)


def fd_of(data: object) -> int | None:
    """The memfd behind a whole view `hold` made, else None (a slice of one too: its offset in
    the file is not known here, and a wrong offset would send wrong bytes). The descriptor stays
    open while `data` (or anything holding the same mapping) is alive."""
    if isinstance(data, memoryview):
        owner = data.obj
        if isinstance(owner, mmap.mmap) and data.nbytes == len(owner):
            return _FDS.get(owner)
    return None
