"""The replay's ground truth: how many of its viewers the target should count at any instant, by
the target's own counting rule, and how many are actually watching.

Pure. Each virtual viewer leaves one Record (real monotonic seconds). The counting rule is the
target's (read from its `/api/stats`, see docs/FIRST-DAY.md):

- play-out (a target that reports `time_scale`): a viewer counts from its first media segment
  until the later of its last request and its first segment's time plus the media seconds it
  fetched divided by `time_scale`, plus the idle timeout. For a viewer who played from its first
  segment without stalling, at `time_scale` = the replay's speed, the second term is exactly its
  quit plus the media it had buffered at that moment: the session lasts as long as its playback.
- requests (a target that reports no `time_scale`: it predates the play-out rule, or is not
  edge360): from its first media segment until its last request, plus the idle timeout.

Watching is from the first frame (for a viewer already watching when the window opened, the
window's start) until the viewer quits, so the rule's overcount (the buffer a leaver never
watched, plus the idle timeout) shows beside it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


class Record(NamedTuple):
    """What one viewer did (real seconds); first_segment None: it never fetched media."""

    first_segment: float | None    # its first media segment request was sent
    last_request: float            # its last answered request was sent
    fetched_s: float               # media seconds of the segments it was answered
    quit: float                    # it left
    watch_from: float | None       # its first frame; None: it never played
    #: counted intervals the rule had already closed before the first three fields' run began:
    #: a silence longer than the rule covers (media buffered before the window opened, which the
    #: target never served, or a buffer kept through a switch to a smaller goal) ends a count the
    #: target then opens again as a new view when the viewer next fetches media
    earlier: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Rule:
    """The target's counting rule: `time_scale` None is the request rule."""

    idle_timeout: float
    time_scale: float | None

    @property
    def name(self) -> str:
        return "requests" if self.time_scale is None else "play-out"

    def end(self, first_segment: float, last_request: float, fetched_s: float) -> float:
        """When the target stops counting a run of requests that began with a media segment at
        `first_segment`, last asked at `last_request`, with `fetched_s` media seconds."""
        end = last_request
        if self.time_scale is not None and self.time_scale > 0:
            end = max(end, first_segment + fetched_s / self.time_scale)
        return end + self.idle_timeout

    def interval(self, r: Record) -> tuple[float, float] | None:
        """When the target should count this viewer's last run, or None (it fetched no media
        since its previous count closed, or never)."""
        if r.first_segment is None:
            return None
        return r.first_segment, self.end(r.first_segment, r.last_request, r.fetched_s)


def counted(records: Iterable[Record], rule: Rule) -> list[tuple[float, float]]:
    """Every interval the target should count, one per view it should count: a viewer's
    earlier closed ones and its last."""
    out: list[tuple[float, float]] = []
    for r in records:
        out.extend(r.earlier)
        iv = rule.interval(r)
        if iv is not None:
            out.append(iv)
    return out


def with_media(records: Iterable[Record]) -> int:
    """Viewers who fetched any media."""
    return sum(1 for r in records if r.first_segment is not None or r.earlier)


def watching(records: Iterable[Record]) -> list[tuple[float, float]]:
    return [(r.watch_from, r.quit) for r in records
            if r.watch_from is not None and r.quit > r.watch_from]


def counts(intervals: list[tuple[float, float]], times: list[float]) -> list[int]:
    """How many half-open intervals [start, end) hold each time."""
    starts = sorted(a for a, _ in intervals)
    ends = sorted(b for _, b in intervals)
    return [bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t) for t in times]


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals held at once (exact: checked at every start)."""
    if not intervals:
        return 0
    return max(counts(intervals, sorted({a for a, _ in intervals})))
