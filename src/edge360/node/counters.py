"""The node's counters as plain numbers: the request path bumps dict entries (no label lookup, no
lock); ops.metrics turns them into metric families when /metrics is scraped. Also the views of
session and cache state that a scrape reads (TrackerView, TierGauge)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge360.node.debuts import Debuts
from edge360.sessions.cmcd import Playback

#: upper bounds of the upstream latency histogram, seconds
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram kept as plain numbers (observed on the hot path without a lock)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


@dataclass(slots=True)
class Counters:
    """Every counter the node keeps, as dicts keyed by label tuples."""

    requests: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    egress: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    late_segments: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int))
    cache_requests: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    cache_bytes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    upstream_requests: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    upstream_latency: Histogram = field(default_factory=Histogram)
    coalesced_waiters: int = 0
    prefetches: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    evictions: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    cache_write_errors: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    responses_cut: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    connections_open: int = 0
    access_log_dropped: int = 0
    #: admission decisions by result (admitted, queued; docs/OVERLOAD.md)
    admission: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: master playlists served to new viewers with renditions left out (shaping)
    shaped: int = 0
    #: master playlists and steering manifests by the pathway they put first
    steering: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: the births of label sets (node.debuts), on the node-wide counters a worker gets from the
    #: hub; None on a process's own counters (its collector keeps its own)
    debuts: Debuts | None = None

    def add(self, other: Counters) -> None:
        """Fold another worker's counters into this one (node-wide figures)."""
        for name in _LABELLED:
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] += v
        for i, n in enumerate(other.upstream_latency.counts):
            self.upstream_latency.counts[i] += n
        self.upstream_latency.total += other.upstream_latency.total
        self.coalesced_waiters += other.coalesced_waiters
        self.connections_open += other.connections_open
        self.access_log_dropped += other.access_log_dropped
        self.shaped += other.shaped


#: the Counters fields that are gauges (a level now, not a running total): a worker that has gone
#: takes its share of these with it, while its share of every other field stays counted
GAUGES = ("connections_open",)


def without_gauges(c: Counters) -> Counters:
    """`c` with its gauges zeroed: what a worker that has gone still contributes to the node."""
    for name in GAUGES:
        setattr(c, name, 0)
    return c


#: label pairs a per-title counter keeps at most; later new pairs count under OTHER_LABEL, so a
#: flood of made-up paths can never grow memory or Prometheus cardinality without bound
MAX_LABELS = 4096
OTHER_LABEL = ("_other", "_other")


def bounded(counter: dict[tuple[str, str], int], key: tuple[str, str]) -> tuple[str, str]:
    """`key` if the counter has it or has room for it, else OTHER_LABEL."""
    return key if key in counter or len(counter) < MAX_LABELS else OTHER_LABEL


_LABELLED = ("requests", "egress", "late_segments", "cache_requests", "cache_bytes",
             "upstream_requests", "prefetches", "evictions", "cache_write_errors",
             "responses_cut", "admission", "steering")


def rate_families(c: Counters, views: Mapping[str, int],
                  watch: Mapping[str, float]) -> dict[str, Mapping[Any, Any]]:
    """Every labelled counter by its metric name: what node.debuts holds at 0 while young."""
    return {"edge360_requests_total": c.requests, "edge360_egress_bytes_total": c.egress,
            "edge360_late_segments_total": c.late_segments,
            "edge360_cache_requests_total": c.cache_requests,
            "edge360_cache_bytes_total": c.cache_bytes,
            "edge360_upstream_requests_total": c.upstream_requests,
            "edge360_prefetches_total": c.prefetches,
            "edge360_cache_evictions_total": c.evictions,
            "edge360_admission_total": c.admission,
            "edge360_steering_total": c.steering,
            "edge360_views_total": views, "edge360_watch_seconds_total": watch}


def counters_to_dict(c: Counters) -> dict[str, Any]:
    """Counters as JSON-able data (label tuples become lists) for the worker hub."""
    out: dict[str, Any] = {}
    for name in _LABELLED:
        out[name] = [[list(k) if isinstance(k, tuple) else k, v]
                     for k, v in getattr(c, name).items()]
    out["latency"] = [c.upstream_latency.counts, c.upstream_latency.total]
    out["waiters"] = c.coalesced_waiters
    out["connections"] = c.connections_open
    out["log_dropped"] = c.access_log_dropped
    out["shaped"] = c.shaped
    return out


def counters_from_dict(d: dict[str, Any]) -> Counters:
    c = Counters()
    for name in _LABELLED:
        target = getattr(c, name)
        for key, value in d.get(name, []):
            target[tuple(key) if isinstance(key, list) else key] += value
    counts, total = d.get("latency", [None, 0.0])
    if counts and len(counts) == len(c.upstream_latency.counts):
        c.upstream_latency.counts = [int(n) for n in counts]
        c.upstream_latency.total = float(total)
    c.coalesced_waiters = int(d.get("waiters", 0))
    c.connections_open = int(d.get("connections", 0))
    c.access_log_dropped = int(d.get("log_dropped", 0))
    c.shaped = int(d.get("shaped", 0))
    return c


class TrackerView(Protocol):
    """What the collector and /api/stats read: a SessionTracker, or a worker's view of the hub's."""

    @property
    def active(self) -> int: ...
    @property
    def starting(self) -> int: ...
    @property
    def peak(self) -> int: ...
    @property
    def peak_time(self) -> float | None: ...
    @property
    def views(self) -> int: ...
    @property
    def views_by_title(self) -> dict[str, int]: ...
    @property
    def watch_seconds_by_title(self) -> dict[str, float]: ...

    def peak_recent(self, now: float) -> int: ...
    def active_by_label(self) -> dict[tuple[str, str], int]: ...
    def expire(self, now: float) -> int: ...
    def touch(self, key: str, now: float, *, title: str, rendition: str | None,
              nbytes: int = 0, media: float = 0.0, track: int = 0,
              cmcd: Playback | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class TierGauge:
    """Bytes, objects held in one cache tier (read at scrape time)."""

    tier: str
    size_bytes: int
    objects: int
