"""Prometheus exposition: an app-owned registry whose collectors read live state at scrape time.

The request path only bumps plain dict counters (no prometheus_client label lookup, no lock); the
collector turns them into metric families when /metrics is scraped. The session gauges come straight
from the tracker, so a scrape always sees the exact current figures. A scraper that stores series
(it sends X-Prometheus-Scrape-Timeout-Seconds, as Prometheus and the agents built on its scrape
code do) sees each counter's new label sets at 0 for their first seconds (node.debuts), so rate()
and increase() count their first increment; one-off readers see the values as they are.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edge360.node.counters import Counters, TierGauge, TrackerView, rate_families
from edge360.node.debuts import Debuts

#: whether the exposition being built is for a scraper that stores series (see `exposition`)
_STORING: contextvars.ContextVar[bool] = contextvars.ContextVar("edge360_storing", default=False)


def stores_series(fields: Mapping[str, str]) -> bool:
    """Whether a /metrics request (its fields, lower-cased names) comes from a scraper that
    keeps series and rates them: Prometheus sends X-Prometheus-Scrape-Timeout-Seconds with every
    scrape, and so do the agents built on its scrape code (Grafana Agent/Alloy, the
    OpenTelemetry Collector, vmagent)."""
    return "x-prometheus-scrape-timeout-seconds" in fields


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
        #: births of label sets while this process counts alone (workers use the hub's)
        self._debuts = Debuts(now())

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        t = self._tracker()
        now = self._now()
        t.expire(now)
        c = self._counters()
        views_by_title = t.views_by_title
        # a title with views has a watch series from its first view on (at 0 until watch time
        # settles), so rate() of it starts from a sample at 0 like every other counter
        watch_by_title: dict[str, float] = dict.fromkeys(views_by_title, 0.0)
        watch_by_title.update(t.watch_seconds_by_title)
        debuts = c.debuts
        if debuts is None:  # this process counts alone: it keeps the births
            debuts = self._debuts
            debuts.observe(rate_families(c, views_by_title, watch_by_title), now)
        storing = _STORING.get()

        def shown(name: str, values: Mapping[Any, Any]) -> Mapping[Any, Any]:
            return debuts.held(name, values, now) if storing else values
        active = GaugeMetricFamily("edge360_sessions_active", "Viewer sessions active now",
                                   labels=["title", "rendition"])
        labels = t.active_by_label()
        for (title, rendition), n in sorted(labels.items()):
            active.add_metric([title, rendition], n)
        if not labels:
            # an idle node still exports the series, so dashboards and alerts see a real zero
            active.add_metric(["none", "none"], 0)
        yield active
        yield GaugeMetricFamily("edge360_sessions_starting",
                                "Sessions that have fetched only playlists so far",
                                value=t.starting)
        yield GaugeMetricFamily("edge360_sessions_peak", "Highest sessions_active since start",
                                value=t.peak)
        yield GaugeMetricFamily("edge360_sessions_peak_recent",
                                "Highest sessions_active within the peak window",
                                value=t.peak_recent(now))
        views = CounterMetricFamily("edge360_views_total",
                                    "Views: sessions that started playback", labels=["title"])
        for title, n in sorted(shown("edge360_views_total", views_by_title).items()):
            views.add_metric([title], n)
        yield views
        watch = CounterMetricFamily(
            "edge360_watch_seconds_total",
            "Watch time, settled up to the idle timeout ago (active sessions included)",
            labels=["title"])
        for title, s in sorted(shown("edge360_watch_seconds_total", watch_by_title).items()):
            watch.add_metric([title], s)
        yield watch
        tiers = list(self._tiers())
        yield from self._counter_families(c, [g.tier for g in tiers], shown)
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
        shown: Callable[[str, Mapping[Any, Any]], Mapping[Any, Any]] = lambda _n, v: v,
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        def labelled(name: str, doc: str, names: list[str],
                     data: Mapping[Any, int]) -> CounterMetricFamily:
            fam = CounterMetricFamily(name, doc, labels=names)
            for key, v in sorted(shown(name, data).items()):
                fam.add_metric([*key] if isinstance(key, tuple) else [str(key)], v)
            return fam

        yield labelled("edge360_requests_total", "Requests answered", ["kind", "code"], c.requests)
        yield labelled("edge360_egress_bytes_total", "Body bytes sent to clients",
                       ["title", "rendition"], c.egress)
        # every (title, rendition) that sent bytes is a known label set: one with no late segment
        # exports its true count, 0, so the panel shows a healthy rendition as 0, not as nothing
        late = dict.fromkeys(c.egress, 0)
        late.update(c.late_segments)
        yield labelled("edge360_late_segments_total",
                       "Segments that took longer to send than their duration",
                       ["title", "rendition"], late)
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
        # admission (docs/OVERLOAD.md): both results are known label sets from the start
        admission = dict.fromkeys(("admitted", "queued"), 0)
        admission.update(c.admission)
        yield labelled("edge360_admission_total",
                       "New viewers admitted, or refused with a place in the queue", ["result"],
                       admission)
        yield labelled("edge360_steering_total",
                       "Master playlists and steering manifests by the pathway put first",
                       ["pathway"], c.steering)
        yield CounterMetricFamily("edge360_shaped_playlists_total",
                                  "Master playlists served to new viewers with renditions left "
                                  "out for the egress budget", value=c.shaped)
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


def exposition(registry: CollectorRegistry, *, storing: bool = False) -> bytes:
    """The text exposition; `storing`: for a scraper that keeps series (`stores_series`), which
    is shown new counter label sets at 0 while they are young."""
    token = _STORING.set(storing)
    try:
        return generate_latest(registry)
    finally:
        _STORING.reset(token)
