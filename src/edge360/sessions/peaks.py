"""The sliding maximum behind `edge360_sessions_peak_recent`: the highest active count within
the last `window` seconds, fed every change of the count and never reset by reading.

A monotonic deque of (until, value) pairs: each value held until `until`, values strictly
decreasing from front to back, so the front is the maximum of what is still in the window.
Changes closer together than window/256 are merged into the previous entry, which bounds the
deque to about 256 entries per window and overstates how long a value held by less than that.

Pure: times are parameters.
"""

from __future__ import annotations

from collections import deque


class RecentPeak:
    """Highest value within the last `window` seconds of a count fed by `changed`."""

    __slots__ = ("_entries", "_quantum", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._quantum = window / 256

    def __len__(self) -> int:
        return len(self._entries)

    def changed(self, at: float, value: int) -> None:
        """The count held `value` until `at` (calls come in time order)."""
        entries = self._entries
        while entries and entries[-1][1] <= value:
            entries.pop()
        if entries and at - entries[-1][0] < self._quantum:
            # extend the last entry (a higher value) to `at` instead of adding one
            entries[-1] = (at, entries[-1][1])
            return
        entries.append((at, value))
        start = at - self.window
        while len(entries) > 1 and entries[0][0] <= start:
            entries.popleft()

    def read(self, now: float, current: int) -> int:
        """The highest value within (now - window, now], the `current` one included."""
        entries = self._entries
        start = now - self.window
        while entries and entries[0][0] <= start:
            entries.popleft()
        best = entries[0][1] if entries else 0
        return max(best, current)
