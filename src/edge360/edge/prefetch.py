"""Fetching ahead: the next segments of a rendition after a viewer's segment, and the warm-up of
whole titles (POST /admin/warm), both through the coalescer so they never double a fetch.

Prefetches are bounded in flight (edge.prefetch_inflight; beyond it they are dropped and counted
"dropped"), counted "issued" when started and "hit" when a viewer is later served one from cache.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge360.core.errors import Edge360Error
from edge360.edge.objects import Target

if TYPE_CHECKING:
    from edge360.edge.state import EdgeState

#: keys remembered as prefetched until a viewer uses them (oldest forgotten first)
MAX_REMEMBERED = 50_000
#: objects one warm-up fetches at once
WARM_CONCURRENCY = 8


def target_for(path: str) -> Target:
    """An upstream target for a path the edge found in a playlist (no viewer, no query)."""
    title = path.split("/", 2)[1] if path.count("/") >= 2 else ""
    return Target.of(path, path, title)


class Prefetcher:
    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.inflight = 0
        self._done: OrderedDict[str, None] = OrderedDict()

    def after(self, t: Target, byterange: tuple[int, int] | None) -> None:
        """A viewer got segment `t` (at `byterange` for single-file renditions): fetch the
        next edge.prefetch_depth segments of its rendition."""
        cfg = self.state.config
        for seg in self.state.index.next_segments(t.path, byterange, cfg.prefetch_depth):
            if seg.byterange is None and (seg.path in self.state.store.memory
                                          or self.state.coalescer.get(seg.path) is not None):
                continue  # already here or on its way
            if self.inflight >= cfg.prefetch_inflight:
                self.state.counters.prefetches["dropped"] += 1
                continue
            self.inflight += 1
            self.state.counters.prefetches["issued"] += 1
            task = self.state.tasks.spawn(self._one(target_for(seg.path), seg.byterange),
                                          f"prefetch {seg.path[:80]}")
            if task is None:
                self.inflight -= 1

    async def _one(self, t: Target, byterange: tuple[int, int] | None) -> None:
        try:
            await self.fetch(t, byterange)
            self._done.pop(t.key, None)
            self._done[t.key] = None
            while len(self._done) > MAX_REMEMBERED:
                self._done.popitem(last=False)
        except Edge360Error:
            pass  # a prefetch that fails costs nothing: the viewer's own request will retry
        finally:
            self.inflight -= 1

    def used(self, key: str) -> None:
        """A viewer was served `key` from cache: count it if a prefetch put it there."""
        if self._done.pop(key, 0) is None:
            self.state.counters.prefetches["hit"] += 1

    async def fetch(self, t: Target, byterange: tuple[int, int] | None) -> bytes | None:
        """Make sure `t` (or its `byterange`) is cached; returns the whole body when small."""
        state = self.state
        found = await state.store.lookup(t.key)
        if found is None:
            if byterange is not None:
                flight, _ = state.fetcher.first_piece(t, byterange[0] // state.config.piece_bytes)
            else:
                flight, _ = state.fetcher.whole(t)
            await flight.finished()
            if flight.result is None:
                return await flight.body() if flight.keep_all else None
            found = flight.result
        obj, whole = found
        if not obj.pieced:
            if not obj.stored.is_fresh(state.node.clock()):
                flight, _ = state.fetcher.whole(t, found)
                await flight.finished()
                if flight.result is not None:
                    return flight.result[1]  # type: ignore[no-any-return]
                return await flight.body() if flight.keep_all else None
            return whole
        start, length = byterange if byterange is not None else (0, obj.length)
        end = min(obj.length, start + max(length, 1)) - 1
        for n in range(start // obj.piece_bytes, end // obj.piece_bytes + 1):
            if not state.store.has_piece(t.key, obj, n):
                await state.piece(t, obj, n)
        return None

    async def warm(self, items: Iterable[tuple[str, tuple[int, int] | None]]) -> None:
        """Fetch many objects with bounded concurrency (a background warm-up)."""
        gate = asyncio.Semaphore(WARM_CONCURRENCY)

        async def one(path: str, byterange: tuple[int, int] | None) -> None:
            async with gate:
                try:
                    await self.fetch(target_for(path), byterange)
                except Edge360Error:
                    pass
        await asyncio.gather(*(one(p, r) for p, r in items))
