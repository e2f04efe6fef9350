"""The in-memory session table that counts viewers (docs/SESSIONS.md).

A session that has fetched only playlists is *starting*: counted apart, never a view, ended
`idle_timeout` after its last request. Its first media segment (or init section) makes it
*active* and counts a view. An active session ends `idle_timeout` after the later of its last
request and the moment its fetched media has played out (sessions.playout).

Every operation is O(1) amortized and the table is bounded. Starting sessions sit in one dict
ordered by last touch (a touch re-inserts at the end), so expiry pops from the front. Active ones
do too while their last request decides; one whose idle deadline passes while its media still
plays moves to a tail ordered by play-out end (sessions.calendar). Expiry merges the two in time
order, so the count and the sliding peak are exact at every moment. Counts by (title, rendition)
label are kept incrementally; watch seconds by sessions.watch. Time is the `now` parameter (the
caller's clock, seconds); nothing here reads a clock.
"""

from __future__ import annotations

from typing import Any

from edge360.sessions.calendar import Calendar
from edge360.sessions.cmcd import Playback
from edge360.sessions.peaks import RecentPeak
from edge360.sessions.playout import AUDIO, MAIN, MAX_MEDIA, NO_MEDIA, advance, rate_of, track_for
from edge360.sessions.watch import WatchClock

#: label of a session that has not asked for a segment yet
NO_RENDITION = "none"
#: where labels beyond `max_labels` are counted, so a flood of odd paths cannot grow the tables
OTHER = "_other"
#: calendar buckets per idle timeout (a bucket is poured into the exact heap when due)
_BUCKETS_PER_TIMEOUT = 64


class Session:
    """One open session: `label` is the interned (title, rendition) it counts under; `first` is
    when it started playback; `play` when the media it fetched on its main track has played
    out (a separate audio track, which few titles have, is kept beside, in the tracker's `_alt`:
    four slots fit a smaller allocation than five)."""

    __slots__ = ("first", "label", "last", "play")

    def __init__(self, first: float, last: float, label: tuple[str, str], play: float) -> None:
        self.first = first
        self.last = last
        self.label = label
        self.play = play


class SessionTracker:
    """Open sessions, views, peaks and per-title totals. All methods are O(1) amortized."""

    def __init__(self, idle_timeout: float, peak_window: float, max_active: int,
                 *, max_labels: int = 4096, time_scale: float = 1.0) -> None:
        if idle_timeout <= 0 or peak_window <= 0 or max_active < 1 or time_scale <= 0:
            raise ValueError("idle_timeout, peak_window and time_scale must be > 0, "
                             "max_active >= 1")
        self.idle_timeout = float(idle_timeout)
        self.peak_window = float(peak_window)
        self.max_active = max_active
        self.max_labels = max_labels
        self.time_scale = float(time_scale)
        self._starting: dict[str, Session] = {}  # by last touch
        self._active: dict[str, Session] = {}  # by last touch
        self._tail: dict[str, Session] = {}  # past their idle deadline, media still playing
        self._alt: dict[str, float] = {}  # play-out of a separate audio track, by active key
        self._ends = Calendar(self.idle_timeout / _BUCKETS_PER_TIMEOUT)  # the tail's ends
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self.watch = WatchClock()
        self.peak = 0
        self.peak_time: float | None = None
        self.views = 0
        self.refused = 0
        self.evicted = 0  # starting sessions dropped to make room in a full table
        self.views_by_title: dict[str, int] = {}
        self.bytes_by_title: dict[str, int] = {}
        self._recent = RecentPeak(self.peak_window)  # sliding maximum of `active`

    # ------------------------------------------------------------ the hot path

    def touch(self, key: str, now: float, *, title: str, rendition: str | None,
              nbytes: int = 0, media: float = 0.0, track: int = MAIN,
              cmcd: Playback | None = None) -> bool:
        """Record a request of session `key`; True when it counted a view (started playback).
        `rendition=None`: a request that carries no media (a playlist, a key), which keeps the
        label and opens a starting session; otherwise a media segment or init section of
        `media` seconds (EXTINF; 0 when unknown) on `track`, whose CMCD is `cmcd`."""
        timeout = self.idle_timeout
        active = self._active
        s = active.get(key)
        if s is None and self._tail:
            s = self._tail.get(key)
            if s is not None:
                until = self._until(key, s)
                if now < until + timeout:  # its media still plays: back among the touched
                    self._ends.discard(key, until + timeout)
                    del self._tail[key]
                    active[key] = s
                    return self._again(key, s, now, title, rendition, nbytes, media, track, cmcd)
                s = None
                self.expire(now)
        if s is not None:
            if now < s.last + timeout or now < self._until(key, s) + timeout:
                del active[key]
                active[key] = s  # re-inserted at the end: the dict stays ordered by last touch
                if (cmcd is None and track == MAIN and rendition is not None
                        and 0.0 < media <= MAX_MEDIA):
                    # the common request, inlined: a main-track segment of known length and
                    # no CMCD (what _again and playout.advance do for it)
                    label = s.label
                    if label[1] != rendition or label[0] != title:
                        self._relabel(s, now, title, rendition)
                    play = s.play
                    s.play = (play if play > now else now) + media / self.time_scale
                    s.last = now
                    if nbytes:
                        self._add_bytes(s.label[0], nbytes)
                    return False
                return self._again(key, s, now, title, rendition, nbytes, media, track, cmcd)
            # it ended (exactly at its deadline or before) and expiry has not seen it yet
            self.expire(now)
        else:
            s = self._starting.get(key)
            if s is not None:
                if now < s.last + timeout:
                    del self._starting[key]
                    if rendition is None:
                        s.last = now
                        self._starting[key] = s
                        self._add_bytes(s.label[0], nbytes)
                        return False
                    self.expire(now)  # the count and the peak exact at this moment
                    return self._start(key, now, title, rendition, nbytes, media, track, cmcd)
                self.expire(now)
        # a new key, or one whose session has ended: expire first so the count and the peak are
        # exact at this moment
        self.expire(now)
        if self._full():
            self.refused += 1
            return False
        if rendition is None:
            self._starting[key] = Session(now, now, self._label(title, NO_RENDITION), now)
            self._add_bytes(title, nbytes)
            return False
        return self._start(key, now, title, rendition, nbytes, media, track, cmcd)

    def _again(self, key: str, s: Session, now: float, title: str, rendition: str | None,
               nbytes: int, media: float, track: int, cmcd: Playback | None) -> bool:
        """A request of an active session (already re-inserted at the end of `_active`)."""
        if rendition is not None:
            track = track_for(track, cmcd)
            label = s.label
            if track in (MAIN, NO_MEDIA) and (label[1] != rendition or label[0] != title):
                self._relabel(s, now, title, rendition)
            self._play(key, s, now, media, track, cmcd)
        s.last = now
        if nbytes:
            self._add_bytes(s.label[0], nbytes)
        return False

    def _relabel(self, s: Session, now: float, title: str, rendition: str) -> None:
        """The session's latest main-track segment is of another rendition or title."""
        label = s.label
        if label[0] != title:
            self.watch.settle(now - self.idle_timeout)
            self.watch.retitle(s, title)
        self._counts[label] -= 1
        s.label = label = self._label(title, rendition)
        self._counts[label] += 1

    def _start(self, key: str, now: float, title: str, rendition: str, nbytes: int,
               media: float, track: int, cmcd: Playback | None) -> bool:
        """Playback starts: the session becomes active and counts a view."""
        n = len(self._active) + len(self._tail)
        self._changed(now, n)
        label = self._label(title, rendition)
        s = Session(now, now, label, now)
        self._active[key] = s
        self._counts[label] += 1
        self.views += 1
        views = self.views_by_title
        views[label[0]] = views.get(label[0], 0) + 1
        if n + 1 > self.peak:
            self.peak = n + 1
            self.peak_time = now
        self.watch.started(s)
        self._play(key, s, now, media, track_for(track, cmcd), cmcd)
        if nbytes:
            self._add_bytes(label[0], nbytes)
        return True

    def _play(self, key: str, s: Session, now: float, media: float, track: int,
              cmcd: Playback | None) -> None:
        """The play-out of the track the segment belongs to moves on (sessions.playout)."""
        if track == MAIN:
            s.play = advance(s.play, now, media, rate_of(self.time_scale, cmcd), cmcd)
        elif track == AUDIO:
            self._alt[key] = advance(self._alt.get(key, 0.0), now, media,
                                     rate_of(self.time_scale, cmcd), cmcd)

    def _until(self, key: str, s: Session) -> float:
        """The moment a session is watched until: its last request, or its media played out
        (the later of its tracks)."""
        until = s.last if s.last >= s.play else s.play
        if self._alt:
            alt = self._alt.get(key)
            if alt is not None and alt > until:
                return alt
        return until

    def _full(self) -> bool:
        """Whether the table is full; a starting session (never a view) makes room first."""
        if len(self._starting) + len(self._active) + len(self._tail) < self.max_active:
            return False
        if self._starting:
            del self._starting[next(iter(self._starting))]
            self.evicted += 1
            return False
        return True

    def expire(self, now: float) -> int:
        """End the sessions whose deadline has come (now >= deadline); returns how many active
        sessions ended. Ends are taken in time order, so the sliding peak sees each at its
        moment."""
        timeout = self.idle_timeout
        starting = self._starting
        while starting:
            key = next(iter(starting))
            if now < starting[key].last + timeout:
                break
            del starting[key]
        self.watch.settle(now - timeout)
        active, tail, ends = self._active, self._tail, self._ends
        ended = 0
        while True:
            a: Session | None = None
            a_key, a_due = "", 0.0
            if active:
                a_key = next(iter(active))
                a = active[a_key]
                a_due = a.last + timeout
                if now < a_due:  # ends at last + timeout, compared as written
                    a = None
            b = ends.first(now)
            if a is not None and (b is None or a_due <= b[0]):
                del active[a_key]
                until = self._until(a_key, a)
                if until > a.last:  # idle, but its media still plays: it waits in the tail
                    tail[a_key] = a
                    ends.add(a_key, until + timeout)
                    continue
                self._end(a_key, a, a_due)
            elif b is not None:
                at, b_key = b
                ends.pop(b_key)
                self._end(b_key, tail.pop(b_key), at)
            else:
                return ended
            ended += 1

    def _end(self, key: str, s: Session, at: float) -> None:
        """An active session (already out of the tables) ended at `at`."""
        # the count dropped at its deadline, not now: record that moment
        self._changed(at, len(self._active) + len(self._tail) + 1)
        self._counts[s.label] -= 1
        self.watch.ended(s, self._until(key, s))
        if self._alt:
            self._alt.pop(key, None)

    # ------------------------------------------------------------ reading

    @property
    def active(self) -> int:
        """Active sessions now (exact after `expire(now)`; touch expires before opening)."""
        return len(self._active) + len(self._tail)

    @property
    def starting(self) -> int:
        """Sessions that have fetched only playlists so far."""
        return len(self._starting)

    def has(self, key: str, now: float) -> bool:
        """Whether session `key` is open at `now` (starting or active)."""
        self.expire(now)
        return key in self._active or key in self._tail or key in self._starting

    @property
    def watch_seconds_by_title(self) -> dict[str, float]:
        """Watch seconds per title, settled up to `idle_timeout` before the last expiry."""
        return self.watch.totals()

    def peak_recent(self, now: float) -> int:
        """Highest `active` within the last `peak_window` seconds; reading resets nothing."""
        return self._recent.read(now, self.active)

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
        if nbytes:
            self.bytes_by_title[title] = self.bytes_by_title.get(title, 0) + nbytes

    def _changed(self, at: float, value: int) -> None:
        """`active` held `value` until `at`: feed the sliding maximum."""
        self._recent.changed(at, value)

    # ------------------------------------------------------------ state file

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-able state: times are stored as ages before `now`, so a restart rebases them."""
        # end what is due first, as every other reader does: a title change settles watch time
        # before those ends are taken, and the totals read here would pin (a counter never goes
        # back) the seconds of sessions already over
        self.expire(now)
        alt = self._alt
        rows = [[k, s.label[0], s.label[1], now - s.first, now - s.last, now - s.play,
                 None if k not in alt else now - alt[k]]
                for k, s in (*self._tail.items(), *self._active.items())]
        return {
            "version": 2,
            "peak": self.peak,
            "peak_age": None if self.peak_time is None else now - self.peak_time,
            "views": self.views,
            "refused": self.refused,
            "views_by_title": dict(self.views_by_title),
            "watch_seconds_by_title": self.watch.totals(),
            "watch_ended_by_title": self.watch.ended_totals(),
            "bytes_by_title": dict(self.bytes_by_title),
            "sessions": rows,
            "starting": [[k, s.label[0], now - s.last] for k, s in self._starting.items()],
        }

    @classmethod
    def restore(cls, d: Any, now: float, *, idle_timeout: float, peak_window: float,
                max_active: int, max_labels: int = 4096,
                time_scale: float = 1.0) -> SessionTracker:
        """A tracker from `snapshot` output (this version or the first, whose sessions had no
        play-out); raises ValueError on a malformed snapshot."""
        t = cls(idle_timeout, peak_window, max_active, max_labels=max_labels,
                time_scale=time_scale)
        try:
            version = d["version"]
            if version not in (1, 2):
                raise ValueError(f"unknown session state version {version!r}")
            t.peak, t.views, t.refused = int(d["peak"]), int(d["views"]), int(d["refused"])
            t.peak_time = None if d["peak_age"] is None else now - float(d["peak_age"])
            t.views_by_title = {str(k): int(v) for k, v in d["views_by_title"].items()}
            shown = {str(k): float(v) for k, v in d["watch_seconds_by_title"].items()}
            ended = shown if version == 1 else {
                str(k): float(v) for k, v in d["watch_ended_by_title"].items()}
            t.watch.restore(ended, shown)
            t.bytes_by_title = {str(k): int(v) for k, v in d["bytes_by_title"].items()}
            sessions: list[tuple[str, Session]] = []
            for row in d["sessions"]:
                key, title, rendition, first_age, last_age = row[:5]
                last = now - float(last_age)
                play = last if version == 1 else now - float(row[5])
                if version == 2 and row[6] is not None:
                    t._alt[str(key)] = now - float(row[6])
                sessions.append((str(key), Session(now - float(first_age), last,
                                                   t._label(str(title), str(rendition)), play)))
            starting = [] if version == 1 else [
                (str(k), Session(now - float(age), now - float(age),
                                 t._label(str(title), NO_RENDITION), now - float(age)))
                for k, title, age in d["starting"]]
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
            raise ValueError(f"malformed session state: {e!r}") from None
        # oldest-touched first, so the dicts' order (expiry order) is right again
        for key, s in sorted(sessions, key=lambda ks: ks[1].last)[-max_active:]:
            t._active[key] = s
            t._counts[s.label] += 1
        t._alt = {k: v for k, v in t._alt.items() if k in t._active}
        for s in sorted(t._active.values(), key=lambda s: s.first):
            t.watch.started(s)
        room = max_active - len(t._active)
        for key, s in sorted(starting, key=lambda ks: ks[1].last)[-room:] if room > 0 else ():
            t._starting[key] = s
        t.peak = max(t.peak, t.active)
        t.expire(now)
        return t
