"""Prometheus exposition: an app-owned registry whose collectors read live state at scrape time.

The request path only bumps plain dict counters (no prometheus_client label lookup, no lock); the
collector turns them into metric families when /metrics is scraped. The session gauges come straight
from the tracker, so a scrape always sees the exact current figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edge360.node.counters import Counters, TierGauge, TrackerView


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
        # known label sets from the start (at 0): rate() sees the first failure and the first cut
        write_errors = {tier: c.cache_write_errors.get(tier, 0) for tier in tiers}
        write_errors.update(c.cache_write_errors)
        yield labelled("edge360_cache_write_errors_total",
                       "Cache writes that failed (full disk, I/O error); the answer went on",
                       ["tier"], write_errors)
        cuts = {reason: c.responses_cut.get(reason, 0) for reason in ("client", "source")}
        cuts.update(c.responses_cut)
        yield labelled("edge360_responses_cut_total",
                       "Answers whose body broke off (client gone, source broken)", ["reason"],
                       cuts)
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
