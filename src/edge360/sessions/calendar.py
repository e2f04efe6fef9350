"""Keys by deadline, in O(1) amortized: a calendar queue with an exact heap for what is due soon.

The session table needs "the next session to end" when ends are not in the order sessions were
touched (a session that fetched far ahead ends long after one touched later). A heap of every
session would cost O(log n) per touch; instead keys sit in buckets of `quantum` seconds (a dict per
bucket, so removing one is O(1)), and only the buckets whose time has come are poured into a small
heap that orders them exactly. Buckets are visited in order by a cursor that walks the clock
(skipping straight to the occupied buckets when the clock jumped further than there are buckets).

Pure: time is the `now` parameter; `deadline` values are seconds on the caller's clock.
"""

from __future__ import annotations

import heapq
import math


class Calendar:
    """Keys with a deadline each: add, discard, and take them in deadline order once due."""

    __slots__ = ("_buckets", "_cursor", "_heap", "_near", "_quantum")

    def __init__(self, quantum: float) -> None:
        if not quantum > 0:
            raise ValueError("quantum must be > 0")
        self._quantum = quantum
        self._buckets: dict[int, dict[str, float]] = {}
        #: buckets up to here have been poured into the heap (None: none yet)
        self._cursor: int | None = None
        self._heap: list[tuple[float, str]] = []
        #: the keys whose entry is in the heap, with their deadline (heap entries that disagree
        #: were discarded or re-added, and are skipped when they surface)
        self._near: dict[str, float] = {}

    def __len__(self) -> int:
        """Keys scheduled (O(buckets): for tests and diagnostics, not the hot path)."""
        return len(self._near) + sum(len(b) for b in self._buckets.values())

    def _bucket(self, deadline: float) -> int:
        return math.floor(deadline / self._quantum)

    def add(self, key: str, deadline: float) -> None:
        """Schedule `key` (not scheduled now) at `deadline`."""
        b = self._bucket(deadline)
        if self._cursor is not None and b <= self._cursor:
            self._near[key] = deadline
            heapq.heappush(self._heap, (deadline, key))
        else:
            bucket = self._buckets.get(b)
            if bucket is None:
                self._buckets[b] = bucket = {}
            bucket[key] = deadline

    def discard(self, key: str, deadline: float) -> None:
        """Unschedule `key`, which was added at `deadline` (a no-op when it is not scheduled)."""
        if self._near.get(key) == deadline:
            del self._near[key]  # its heap entry is skipped when it surfaces
            return
        b = self._bucket(deadline)
        bucket = self._buckets.get(b)
        if bucket is not None and bucket.get(key) == deadline:
            del bucket[key]
            if not bucket:
                del self._buckets[b]

    def first(self, now: float) -> tuple[float, str] | None:
        """The earliest (deadline, key) with deadline <= now, left in place; None if none."""
        self._pour(self._bucket(now))
        heap, near = self._heap, self._near
        while heap:
            deadline, key = heap[0]
            if near.get(key) != deadline:
                heapq.heappop(heap)  # discarded or re-added since
                continue
            return (deadline, key) if deadline <= now else None
        return None

    def pop(self, key: str) -> None:
        """Remove `key`, the entry `first` just returned."""
        heapq.heappop(self._heap)
        del self._near[key]

    def _pour(self, upto: int) -> None:
        """Move the buckets up to `upto` into the heap."""
        cursor = self._cursor
        if cursor is not None and upto <= cursor:
            return
        buckets = self._buckets
        if cursor is None or upto - cursor > len(buckets):
            due = sorted(b for b in buckets if b <= upto)  # the clock jumped: visit occupied ones
        else:
            due = [b for b in range(cursor + 1, upto + 1) if b in buckets]
        heap, near = self._heap, self._near
        for b in due:
            for key, deadline in buckets.pop(b).items():
                near[key] = deadline
                heapq.heappush(heap, (deadline, key))
        self._cursor = upto
