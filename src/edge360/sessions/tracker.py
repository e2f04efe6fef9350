"""The in-memory session table that counts viewers.

A session is active from its first request until no request has come for `idle_timeout` seconds.
The tracker is O(1) per request and bounded: sessions live in one insertion-ordered dict whose
order is "least recently touched first" (a touch re-inserts at the end), so expiry pops from the
front while the oldest is idle and never scans live sessions. Counts by (title, rendition) label
are kept incrementally. Time is the `now` parameter (the caller's clock, seconds); nothing here
reads a clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: label of a session that has not asked for a segment yet
NO_RENDITION = "none"
#: where labels beyond `max_labels` are counted, so a flood of odd paths cannot grow the tables
OTHER = "_other"


class _Session:
    """One open session; `label` is the interned (title, rendition) it counts under."""

    __slots__ = ("first", "label", "last")

    def __init__(self, first: float, last: float, label: tuple[str, str]) -> None:
        self.first = first
        self.last = last
        self.label = label


class SessionTracker:
    """Open sessions, views, peaks and per-title totals. All methods are O(1) amortized."""

    def __init__(self, idle_timeout: float, peak_window: float, max_active: int,
                 *, max_labels: int = 4096) -> None:
        if idle_timeout <= 0 or peak_window <= 0 or max_active < 1:
            raise ValueError("idle_timeout and peak_window must be > 0, max_active >= 1")
        self.idle_timeout = float(idle_timeout)
        self.peak_window = float(peak_window)
        self.max_active = max_active
        self.max_labels = max_labels
        self._sessions: dict[str, _Session] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self.peak = 0
        self.peak_time: float | None = None
        self.views = 0
        self.refused = 0
        self.views_by_title: dict[str, int] = {}
        self.watch_seconds_by_title: dict[str, float] = {}
        self.bytes_by_title: dict[str, int] = {}
        # Sliding maximum of `active` (a monotonic deque): entries are (end, value) of values that
        # held until `end`; values strictly decrease from front to back. Ends closer together than
        # a quantum are merged, which bounds the deque to ~256 entries per window.
        self._recent: deque[tuple[float, int]] = deque()
        self._quantum = self.peak_window / 256

    # ------------------------------------------------------------ the hot path

    def touch(self, key: str, now: float, *, title: str, rendition: str | None,
              nbytes: int = 0) -> bool:
        """Record a request of session `key`; True when it opened a session (a view).
        `rendition=None` (a playlist) keeps the session's label; a new one starts at "none"."""
        sessions = self._sessions
        s = sessions.get(key)
        if s is not None and now < s.last + self.idle_timeout:
            s.last = now
            del sessions[key]
            sessions[key] = s  # re-inserted at the end: the dict stays ordered by last touch
            if rendition is not None:
                label = s.label
                if label[1] != rendition or label[0] != title:
                    self._counts[label] -= 1
                    s.label = label = self._label(title, rendition)
                    self._counts[label] += 1
            if nbytes:
                self._add_bytes(s.label[0], nbytes)
            return False
        # a new key, or one idle for the timeout (that session has ended; expire finds it in
        # place, since everything before it in the dict is older): expire first so the count
        # and the peak are exact at this moment
        self.expire(now)
        if len(sessions) >= self.max_active:
            self.refused += 1
            return False
        label = self._label(title, NO_RENDITION if rendition is None else rendition)
        self._changed(now, len(sessions))
        sessions[key] = _Session(now, now, label)
        self._counts[label] += 1
        self.views += 1
        views = self.views_by_title
        views[label[0]] = views.get(label[0], 0) + 1
        if len(sessions) > self.peak:
            self.peak = len(sessions)
            self.peak_time = now
        if nbytes:
            self._add_bytes(label[0], nbytes)
        return True

    def expire(self, now: float) -> int:
        """End the sessions idle for `idle_timeout` (now >= last + idle_timeout); their watch
        seconds (last - first) go to per-title totals. Returns how many ended."""
        sessions = self._sessions
        timeout = self.idle_timeout
        ended = 0
        while sessions:
            key = next(iter(sessions))
            s = sessions[key]
            if now < s.last + timeout:  # ends at last + timeout, compared as written
                break
            # the count dropped when the session went idle, not now: record that moment
            self._changed(s.last + timeout, len(sessions))
            del sessions[key]
            self._counts[s.label] -= 1
            title = s.label[0]
            watch = self.watch_seconds_by_title
            watch[title] = watch.get(title, 0.0) + (s.last - s.first)
            ended += 1
        return ended

    # ------------------------------------------------------------ reading

    @property
    def active(self) -> int:
        """Sessions open now (exact after `expire(now)`; touch expires before opening)."""
        return len(self._sessions)

    def peak_recent(self, now: float) -> int:
        """Highest `active` within the last `peak_window` seconds; reading resets nothing."""
        recent = self._recent
        start = now - self.peak_window
        while recent and recent[0][0] <= start:
            recent.popleft()
        best = recent[0][1] if recent else 0
        return max(best, len(self._sessions))

    def active_by_label(self) -> dict[tuple[str, str], int]:
        """Active sessions by (title, rendition); the values sum to `active`."""
        return dict(self._counts)

    # ------------------------------------------------------------ internals

    def _label(self, title: str, rendition: str) -> tuple[str, str]:
        label = self._labels.get((title, rendition))
        if label is None:
            if len(self._labels) >= self.max_labels and (title, rendition) != (OTHER, OTHER):
                return self._label(OTHER, OTHER)  # the one label allowed past the cap
            # interned: every session of the label shares one tuple and its two strings
            label = (title, rendition)
            self._labels[label] = label
            self._counts.setdefault(label, 0)
        return label

    def _add_bytes(self, title: str, nbytes: int) -> None:
        self.bytes_by_title[title] = self.bytes_by_title.get(title, 0) + nbytes

    def _changed(self, at: float, value: int) -> None:
        """`active` held `value` until `at`: feed the sliding maximum."""
        recent = self._recent
        while recent and recent[-1][1] <= value:
            recent.pop()
        if recent and at - recent[-1][0] < self._quantum:
            # extend the last entry (a higher value) to `at` instead of adding one: this bounds
            # the deque and overstates how long that value held by less than a quantum
            recent[-1] = (at, recent[-1][1])
            return
        recent.append((at, value))
        start = at - self.peak_window
        while len(recent) > 1 and recent[0][0] <= start:
            recent.popleft()

    # ------------------------------------------------------------ state file

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-able state: times are stored as ages before `now`, so a restart rebases them."""
        return {
            "version": 1,
            "peak": self.peak,
            "peak_age": None if self.peak_time is None else now - self.peak_time,
            "views": self.views,
            "refused": self.refused,
            "views_by_title": dict(self.views_by_title),
            "watch_seconds_by_title": dict(self.watch_seconds_by_title),
            "bytes_by_title": dict(self.bytes_by_title),
            "sessions": [[k, s.label[0], s.label[1], now - s.first, now - s.last]
                         for k, s in self._sessions.items()],
        }

    @classmethod
    def restore(cls, d: dict[str, Any], now: float, *, idle_timeout: float, peak_window: float,
                max_active: int, max_labels: int = 4096) -> SessionTracker:
        """A tracker from `snapshot` output; raises ValueError on a malformed snapshot."""
        t = cls(idle_timeout, peak_window, max_active, max_labels=max_labels)
        try:
            if d["version"] != 1:
                raise ValueError(f"unknown session state version {d['version']!r}")
            t.peak, t.views, t.refused = int(d["peak"]), int(d["views"]), int(d["refused"])
            t.peak_time = None if d["peak_age"] is None else now - float(d["peak_age"])
            t.views_by_title = {str(k): int(v) for k, v in d["views_by_title"].items()}
            t.watch_seconds_by_title = {str(k): float(v)
                                        for k, v in d["watch_seconds_by_title"].items()}
            t.bytes_by_title = {str(k): int(v) for k, v in d["bytes_by_title"].items()}
            # oldest-touched first, so the dict order (expiry order) is right again
            rows = sorted(d["sessions"], key=lambda r: -float(r[4]))
            for key, title, rendition, first_age, last_age in rows:
                if len(t._sessions) >= max_active:
                    break
                label = t._label(str(title), str(rendition))
                t._sessions[str(key)] = _Session(now - float(first_age), now - float(last_age),
                                                 label)
                t._counts[label] += 1
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed session state: {e!r}") from None
        t.peak = max(t.peak, len(t._sessions))
        t.expire(now)
        return t
