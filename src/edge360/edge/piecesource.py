"""Where the pieces of one answer come from, in the order the answer reads them: the memory
tier; else the disk tier's file, opened for sendfile (the kernel sends it from the page cache:
no read into memory, no copy out of it); else a fetch from upstream.

Disk pieces are opened a batch at a time, in one worker-thread call per batch: a thread hop per
piece cost the event loop a fifth of its time on 8 MiB hits (the hand-off and the wake-up), more
than the opens themselves. The answer closes each file once its bytes went out; `close` closes
every file the source opened, so what the answer never reached (a client that left, a range
that failed) is closed too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from edge360.cache.diskformat import OpenBody
from edge360.edge.store import EdgeStore
from edge360.edge.stored import StoredObject

#: disk pieces opened per worker-thread call at most (files held open ahead of the answer)
BATCH: Final = 8


class PieceSource:
    """The pieces `needed` (in reading order) of `obj` stored under `key`; `fetch(n)` gets a
    piece neither tier holds (from upstream, once however many ask)."""

    def __init__(self, store: EdgeStore, key: str, obj: StoredObject, needed: Sequence[int],
                 fetch: Callable[[int], Awaitable[bytes | memoryview]]) -> None:
        self._store, self._key, self._obj = store, key, obj
        self._needed = list(needed)
        self._fetch = fetch
        self._ahead: dict[int, OpenBody] = {}  # opened, not handed out yet
        self._opened: list[OpenBody] = []  # every file opened, for `close`
        self._tried: set[int] = set()  # pieces a batch looked for on disk

    async def piece(self, n: int) -> bytes | memoryview | OpenBody:
        """Piece n: its bytes, or its open file (the caller may close it once sent)."""
        data = self._store.piece_in_memory(self._key, self._obj, n)
        if data is not None:
            return data
        if n not in self._tried and self._store.disk is not None:
            at = self._needed.index(n) if n in self._needed else len(self._needed)
            batch = [n, *(m for m in self._needed[at + 1:] if m not in self._tried)][:BATCH]
            self._tried.update(batch)
            found = await self._store.open_pieces(self._key, self._obj, batch)
            self._ahead.update(found)
            self._opened += found.values()
        body = self._ahead.pop(n, None)
        return body if body is not None else await self._fetch(n)

    def close(self) -> None:
        """Close every file this source opened (closing one twice is harmless)."""
        opened, self._opened, self._ahead = self._opened, [], {}
        for body in opened:
            body.close()
