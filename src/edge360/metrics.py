"""Prometheus exposition: an app-owned registry whose collectors read live state at scrape time.

The request path only bumps plain dict counters (no prometheus_client label lookup, no lock); the
collector turns them into metric families when /metrics is scraped. The session gauges come straight
from the tracker, so a scrape always sees the exact current figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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
    connections_open: int = 0
    access_log_dropped: int = 0

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


#: label pairs a per-title counter keeps at most; later new pairs count under OTHER_LABEL, so a
#: flood of made-up paths can never grow memory or Prometheus cardinality without bound
MAX_LABELS = 4096
OTHER_LABEL = ("_other", "_other")


def bounded(counter: dict[tuple[str, str], int], key: tuple[str, str]) -> tuple[str, str]:
    """`key` if the counter has it or has room for it, else OTHER_LABEL."""
    return key if key in counter or len(counter) < MAX_LABELS else OTHER_LABEL


_LABELLED = ("requests", "egress", "late_segments", "cache_requests", "cache_bytes",
             "upstream_requests", "prefetches", "evictions")


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
    return c


class TrackerView(Protocol):
    """What the collector and /api/stats read: a SessionTracker, or a worker's view of the hub's."""

    @property
    def active(self) -> int: ...
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
              nbytes: int = 0) -> bool: ...


@dataclass(frozen=True, slots=True)
class TierGauge:
    """Bytes, objects held in one cache tier (read at scrape time)."""

    tier: str
    size_bytes: int
    objects: int


class NodeCollector(Collector):
    """Reads the tracker, the counters and the cache tiers when Prometheus scrapes."""

    def __init__(
        self,
        tracker: Callable[[], TrackerView],
        counters: Callable[[], Counters],
        now: Callable[[], float],
        tiers: Callable[[], Sequence[TierGauge]] = lambda: (),
        parents: Callable[[], dict[str, bool]] = dict,
    ) -> None:
        self._tracker = tracker
        self._counters = counters
        self._now = now
        self._tiers = tiers
        self._parents = parents

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        t = self._tracker()
        now = self._now()
        t.expire(now)
        active = GaugeMetricFamily("edge360_sessions_active", "Viewer sessions active now",
                                   labels=["title", "rendition"])
        labels = t.active_by_label()
        for (title, rendition), n in sorted(labels.items()):
            active.add_metric([title, rendition], n)
        if not labels:
            # an idle node still exports the series, so dashboards and alerts see a real zero
            active.add_metric(["none", "none"], 0)
        yield active
        yield GaugeMetricFamily("edge360_sessions_peak", "Highest sessions_active since start",
                                value=t.peak)
        yield GaugeMetricFamily("edge360_sessions_peak_recent",
                                "Highest sessions_active within the peak window",
                                value=t.peak_recent(now))
        views = CounterMetricFamily("edge360_views_total", "Sessions opened", labels=["title"])
        for title, n in sorted(t.views_by_title.items()):
            views.add_metric([title], n)
        yield views
        watch = CounterMetricFamily("edge360_watch_seconds_total", "Watch time of ended sessions",
                                    labels=["title"])
        for title, s in sorted(t.watch_seconds_by_title.items()):
            watch.add_metric([title], s)
        yield watch
        tiers = list(self._tiers())
        yield from self._counter_families(self._counters(), [g.tier for g in tiers])
        if tiers:
            size = GaugeMetricFamily("edge360_cache_size_bytes", "Bytes held per cache tier",
                                     labels=["tier"])
            objs = GaugeMetricFamily("edge360_cache_objects", "Objects held per cache tier",
                                     labels=["tier"])
            for g in tiers:
                size.add_metric([g.tier], g.size_bytes)
                objs.add_metric([g.tier], g.objects)
            yield size
            yield objs
        parents = self._parents()
        if parents:
            up = GaugeMetricFamily("edge360_parent_up", "1 while a parent passes health checks",
                                   labels=["parent"])
            for parent, ok in sorted(parents.items()):
                up.add_metric([parent], 1 if ok else 0)
            yield up

    @staticmethod
    def _counter_families(
        c: Counters, tiers: Sequence[str] = (),
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        def labelled(name: str, doc: str, names: list[str],
                     data: dict[tuple[str, str], int] | dict[str, int]) -> CounterMetricFamily:
            fam = CounterMetricFamily(name, doc, labels=names)
            for key, v in sorted(data.items()):
                fam.add_metric([*key] if isinstance(key, tuple) else [str(key)], v)
            return fam

        yield labelled("edge360_requests_total", "Requests answered", ["kind", "code"], c.requests)
        yield labelled("edge360_egress_bytes_total", "Body bytes sent to clients",
                       ["title", "rendition"], c.egress)
        yield labelled("edge360_late_segments_total",
                       "Segments that took longer to send than their duration",
                       ["title", "rendition"], c.late_segments)
        yield labelled("edge360_cache_requests_total", "Edge cache lookups", ["result"],
                       c.cache_requests)
        yield labelled("edge360_cache_bytes_total", "Body bytes served by cache result",
                       ["result"], c.cache_bytes)
        yield labelled("edge360_upstream_requests_total", "Requests sent upstream", ["code"],
                       c.upstream_requests)
        yield labelled("edge360_prefetches_total", "Prefetches by result", ["result"],
                       c.prefetches)
        # every tier the node has is a known label set: one that never evicted exports its true
        # count, 0, so rate() sees the first eviction and the panel shows a healthy tier as 0
        evictions = {tier: c.evictions.get(tier, 0) for tier in tiers}
        evictions.update(c.evictions)
        yield labelled("edge360_cache_evictions_total", "Objects evicted per tier", ["tier"],
                       evictions)
        hist = HistogramMetricFamily("edge360_upstream_request_duration_seconds",
                                     "Upstream time to response headers")
        hist.add_metric([], c.upstream_latency.buckets(), c.upstream_latency.total)
        yield hist
        yield CounterMetricFamily("edge360_coalesced_waiters_total",
                                  "Requests that waited on another's upstream fetch",
                                  value=c.coalesced_waiters)
        yield GaugeMetricFamily("edge360_connections_open", "Client connections open",
                                value=c.connections_open)
        yield CounterMetricFamily("edge360_access_log_dropped_total",
                                  "Access log lines dropped because stderr fell behind",
                                  value=c.access_log_dropped)


def make_registry(collector: NodeCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
