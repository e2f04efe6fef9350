"""What one process's virtual players measured, and how worker processes send it to the parent.

Bounded by the number of viewers a process runs: one Record per viewer, fixed-size histograms,
and a rendition mix of (time bucket x rendition) cells.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from edge360.replay.report import Histogram
from edge360.replay.truth import Record, Rule

#: distinct "kind: detail" error entries a report keeps (replay/wirepool.py's details are few)
MAX_DETAILS = 32


@dataclass
class Stats:
    """The counters of one process's players (one event loop, so no locking)."""

    rule: Rule
    requests: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: the same errors by "kind: detail" (which timeout: the connect, the answer, the queue),
    #: at most MAX_DETAILS entries, the rest as "kind: other"
    error_details: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    startup: Histogram = field(default_factory=Histogram)
    #: how late a player woke for a due fetch or an arrival (real seconds): lost pacing shows here
    lateness: Histogram = field(default_factory=Histogram)
    late_max: float = 0.0          # the latest wake of all (a burst shows here, not in the p99)
    stall_s: float = 0.0           # media-equivalent seconds stalled (real seconds x speed)
    played_s: float = 0.0          # media seconds played
    running: int = 0               # players started and not yet gone
    counting: int = 0              # players between their first media segment and their quit
    watching_now: int = 0          # players between their first frame and their quit
    reloads: int = 0               # live playlists: media playlist reloads
    live_skips: int = 0            # live playlists: jumps to the live edge after falling behind
    gave_up: int = 0               # players that left after a segment failed every retry
    records: list[Record] = field(default_factory=list)
    #: when players that left stop counting by the rule (a heap), for the progress line
    tails: list[float] = field(default_factory=list)
    #: rendition mix: content seconds fetched per (time bucket, rendition name); bucket =
    #: monotonic seconds // PlayerConfig.mix_bucket_s. Bounded by buckets x renditions.
    mix: dict[tuple[int, str], float] = field(default_factory=dict)
    #: each rendition name's BANDWIDTH, to stack the mix from the lowest rendition up
    mix_bandwidth: dict[str, int] = field(default_factory=dict)
    #: admission queues (replay/queue.py): players refused at least once, 503s they got, those
    #: admitted after waiting (and how long they waited), those that left while waiting
    queued: int = 0
    refusals: int = 0
    queue_admitted: int = 0
    queue_left: int = 0
    queue_wait: Histogram = field(default_factory=Histogram)
    queue_wait_max: float = 0.0
    #: content steering (replay/steer.py): pathway moves, manifest loads and failed ones, and
    #: the media segments fetched from each pathway
    pathway_moves: int = 0
    steering_polls: int = 0
    steering_errors: int = 0
    pathways: dict[str, int] = field(default_factory=dict)

    @property
    def idle_timeout(self) -> float:
        return self.rule.idle_timeout

    def fetched(self, bucket: int, name: str, bandwidth: int, content_s: float) -> None:
        key = (bucket, name)
        self.mix[key] = self.mix.get(key, 0.0) + content_s
        self.mix_bandwidth[name] = bandwidth

    def late(self, seconds: float) -> None:
        """A player (or the scheduler) woke `seconds` after it was due."""
        seconds = max(seconds, 0.0)
        self.lateness.add(seconds)
        self.late_max = max(self.late_max, seconds)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if detail:
            _add(self.error_details, f"{kind}: {detail}", 1)

    def left(self, record: Record) -> None:
        """A player is gone: keep its record, and its counted tail for the progress line."""
        self.records.append(record)
        interval = self.rule.interval(record)
        if interval is not None:
            heapq.heappush(self.tails, interval[1])

    def achieved_now(self, now: float) -> int:
        """Viewers the rule counts at `now`: those playing plus the tails of those gone."""
        while self.tails and self.tails[0] <= now:
            heapq.heappop(self.tails)
        return self.counting + len(self.tails)

    def progress(self, now: float) -> dict[str, Any]:
        """The once-a-second figures a worker sends its parent."""
        return {"requests": self.requests, "errors": sum(self.errors.values()),
                "latency": self.latency.counts, "achieved": self.achieved_now(now),
                "watching": self.watching_now}

    def to_wire(self) -> dict[str, Any]:
        """Everything, as plain data for the pipe to the parent."""
        return {"requests": self.requests, "bytes": self.bytes, "errors": dict(self.errors),
                "error_details": dict(self.error_details),
                "latency": self.latency.counts, "startup": self.startup.counts,
                "lateness": self.lateness.counts, "late_max": self.late_max,
                "stall_s": self.stall_s,
                "played_s": self.played_s, "reloads": self.reloads,
                "live_skips": self.live_skips, "gave_up": self.gave_up,
                "records": [tuple(r) for r in self.records], "mix": self.mix,
                "mix_bandwidth": self.mix_bandwidth, "queued": self.queued,
                "refusals": self.refusals, "queue_admitted": self.queue_admitted,
                "queue_left": self.queue_left, "queue_wait": self.queue_wait.counts,
                "queue_wait_max": self.queue_wait_max, "pathway_moves": self.pathway_moves,
                "steering_polls": self.steering_polls, "steering_errors": self.steering_errors,
                "pathways": self.pathways}

    def merge(self, wire: dict[str, Any]) -> None:
        """Add a worker's `to_wire` figures into these."""
        self.requests += wire["requests"]
        self.bytes += wire["bytes"]
        for k, n in wire["errors"].items():
            self.errors[k] = self.errors.get(k, 0) + n
        for key, n in wire.get("error_details", {}).items():
            _add(self.error_details, key, int(n))
        for name in ("latency", "startup", "lateness"):
            getattr(self, name).merge(Histogram(list(wire[name])))
        self.late_max = max(self.late_max, float(wire.get("late_max", 0.0)))
        self.stall_s += wire["stall_s"]
        self.played_s += wire["played_s"]
        self.reloads += wire["reloads"]
        self.live_skips += wire["live_skips"]
        self.gave_up += wire["gave_up"]
        self.records.extend(Record(*r) for r in wire["records"])
        for key, seconds in wire["mix"].items():
            self.mix[key] = self.mix.get(key, 0.0) + seconds
        self.mix_bandwidth.update(wire["mix_bandwidth"])
        for name in ("queued", "refusals", "queue_admitted", "queue_left", "pathway_moves",
                     "steering_polls", "steering_errors"):
            setattr(self, name, getattr(self, name) + int(wire.get(name, 0)))
        self.queue_wait.merge(Histogram(list(wire.get("queue_wait", Histogram().counts))))
        self.queue_wait_max = max(self.queue_wait_max, float(wire.get("queue_wait_max", 0.0)))
        for pathway, n in wire.get("pathways", {}).items():
            self.pathways[pathway] = self.pathways.get(pathway, 0) + int(n)

    def summary(self) -> dict[str, Any]:
        """The queue and steering figures of the report (docs/OVERLOAD.md, "Proof by replay")."""
        wait = self.queue_wait
        return {
            "queue": {"queued_viewers": self.queued, "refusals": self.refusals,
                      "admitted_from_queue": self.queue_admitted,
                      "left_while_queued": self.queue_left,
                      "wait_p50_s": _round(wait.percentile(0.5)),
                      "wait_p95_s": _round(wait.percentile(0.95)),
                      "wait_max_s": round(self.queue_wait_max, 3)},
            "steering": {"pathway_moves": self.pathway_moves, "manifests": self.steering_polls,
                         "manifest_errors": self.steering_errors,
                         "segments_by_pathway": dict(sorted(self.pathways.items()))},
        }


def _add(details: dict[str, int], key: str, n: int) -> None:
    """Count `n` under `key`, or under "kind: other" once MAX_DETAILS keys are held (a detail
    can carry an exception's text: the dict stays bounded whatever the target answers)."""
    if key not in details and len(details) >= MAX_DETAILS:
        key = key.partition(":")[0] + ": other"
    details[key] = details.get(key, 0) + n


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
