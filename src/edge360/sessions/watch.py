"""Watch seconds per title, exported while sessions are still active, in O(1) per event.

A session's watch time runs from its first media segment to the moment it is watched until (the
later of its last request and the play-out of what it fetched, sessions.playout); it ends
`idle_timeout` after that moment. So at time `now`, every session still active was watched at
least until `now - idle_timeout`, and every ended one until its settled moment: the watch seconds
up to `tau = now - idle_timeout` are final. That is what is exported: per title, the ended
sessions' totals plus, for each active session, `tau - first`, kept as a count and a sum of
`first` per title (a session joins them once `tau` passes its start, in start order, from a FIFO).
The figure trails real time by exactly `idle_timeout` and never has to be taken back.

Pure: `tau` is a parameter; nothing reads a clock.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol


class Watched(Protocol):
    """A session as the watch clock sees it: its start (moved forward when it changes title)
    and its (title, rendition) label."""

    first: float
    label: tuple[str, str]


class WatchClock:
    """Per-title watch seconds settled up to `tau`."""

    __slots__ = ("_count", "_ended", "_epoch", "_shown", "_sum", "_young", "tau")

    def __init__(self) -> None:
        self.tau = float("-inf")
        #: started sessions whose start `tau` has not reached yet, in start order
        self._young: deque[Watched] = deque()
        self._count: dict[str, int] = {}  # active sessions past their start, per title
        self._sum: dict[str, float] = {}  # their starts, relative to _epoch (keeps sums small)
        self._ended: dict[str, float] = {}  # watch seconds of ended sessions
        self._shown: dict[str, float] = {}  # highest figure read: a counter never goes back
        self._epoch: float | None = None

    def started(self, s: Watched) -> None:
        """A session started playback at `s.first` (never earlier than any before it)."""
        if self._epoch is None:
            self._epoch = s.first
        self._young.append(s)

    def settle(self, tau: float) -> None:
        """Advance to `tau`: sessions started by then count from their start."""
        self.tau = max(self.tau, tau)
        young = self._young
        while young and young[0].first <= tau:
            s = young.popleft()
            self._join(s.label[0], s.first)

    def ended(self, s: Watched, until: float) -> None:
        """A session ended, having been watched until `until` (it has started by `tau`)."""
        title = s.label[0]
        self._leave(title, s.first)
        self._ended[title] = self._ended.get(title, 0.0) + (until - s.first)

    def retitle(self, s: Watched, title: str) -> None:
        """A session moves to `title` (its label is changed by the caller after this): its watch
        up to `tau` stays with the old title, and it counts under the new one from `tau` on."""
        old = s.label[0]
        if old == title or s.first > self.tau:
            return  # not counted yet: it will count under its title when `tau` reaches it
        self._leave(old, s.first)
        self._ended[old] = self._ended.get(old, 0.0) + (self.tau - s.first)
        s.first = self.tau
        self._join(title, s.first)

    def totals(self) -> dict[str, float]:
        """Watch seconds per title up to `tau` (ended sessions and active ones)."""
        epoch = self._epoch or 0.0
        at = self.tau - epoch
        shown = self._shown
        out: dict[str, float] = {}
        for title in {*self._ended, *self._count, *shown}:
            value = self._ended.get(title, 0.0) + self._count.get(title, 0) * at \
                - self._sum.get(title, 0.0)
            # rounding in the running sum must never make the counter go down
            value = max(value, shown.get(title, 0.0))
            shown[title] = out[title] = value
        return out

    def restore(self, ended: dict[str, float], shown: dict[str, float]) -> None:
        """Totals kept across a restart (sessions are started again by the caller)."""
        self._ended = dict(ended)
        self._shown = dict(shown)

    def ended_totals(self) -> dict[str, float]:
        return dict(self._ended)

    def _join(self, title: str, first: float) -> None:
        self._count[title] = self._count.get(title, 0) + 1
        self._sum[title] = self._sum.get(title, 0.0) + (first - (self._epoch or 0.0))

    def _leave(self, title: str, first: float) -> None:
        n = self._count.get(title, 0) - 1
        if n > 0:
            self._count[title] = n
            self._sum[title] -= first - (self._epoch or 0.0)
        else:  # the last one: forget the sum exactly instead of carrying rounding
            self._count.pop(title, None)
            self._sum.pop(title, None)
