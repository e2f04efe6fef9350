"""Counters a scrape can rate (node.debuts): a counter's new label set is shown at 0 to a
series-storing scraper for its first HOLD seconds, so rate() and increase() count its first
increment; one-off readers see the values as they are. Pure tables, then an in-process node under
a fake clock; tests/test_prometheus_live.py checks the same with a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from edge360.node.debuts import HOLD, LIMIT, Debuts
from tests.fixtures.clock import FakeClock
from tests.fixtures.titles import make_title
from tests.test_metrics import app_with_clock

PROMETHEUS = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}


def test_new_label_sets_are_held_at_zero_then_shown() -> None:
    d = Debuts(start=1000.0)
    views = {"film": 3}
    d.observe({"views": {}}, 1001.0)  # the first look: nothing yet
    d.observe({"views": views}, 1002.0)  # born now
    assert d.held("views", views, 1002.0) == {"film": 0}
    assert d.held("views", views, 1002.0 + HOLD - 0.001) == {"film": 0}
    assert d.held("views", views, 1002.0 + HOLD) == {"film": 3}
    assert d.held("other", views, 1002.0) == {"film": 3}  # never seen: not held


def test_what_the_first_look_finds_was_born_at_the_start() -> None:
    """A node watched late does not replay its history as a burst; a fresh one holds."""
    late = Debuts(start=0.0)
    late.observe({"egress": {("t", "r"): 10**9}}, 3600.0)
    assert late.held("egress", {("t", "r"): 10**9}, 3600.0) == {("t", "r"): 10**9}
    fresh = Debuts(start=0.0)
    fresh.observe({"egress": {("t", "r"): 5}}, 2.0)
    assert fresh.held("egress", {("t", "r"): 5}, 2.0) == {("t", "r"): 0}
    assert fresh.held("egress", {("t", "r"): 5}, HOLD) == {("t", "r"): 5}


def test_the_hub_ships_young_births_to_workers() -> None:
    hub = Debuts(start=0.0)
    hub.observe({}, 1.0)
    hub.observe({"requests": {("segment", "200"): 1}, "views": {"a": 1}}, 100.0)
    hub.observe({"views": {"b": 1}}, 100.0 + HOLD)
    rows = json.loads(json.dumps(hub.young(100.0 + HOLD)))  # through the wire
    assert rows == [["views", ["b"], 100.0 + HOLD]]
    worker = Debuts.from_young(rows)
    assert worker.held("views", {"a": 1, "b": 1}, 100.0 + HOLD) == {"a": 1, "b": 0}


def test_births_are_bounded() -> None:
    d = Debuts(start=0.0)
    d.observe({}, 1.0)
    d.observe({"egress": {str(i): 1 for i in range(LIMIT + 10)}}, 2.0)
    held = d.held("egress", {str(i): 1 for i in range(LIMIT + 10)}, 2.0)
    assert sum(held.values()) == 10  # past the bound new label sets are shown at once


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


async def test_prometheus_sees_zero_first_a_curl_sees_the_value(tmp_path: Path) -> None:
    make_title(tmp_path)
    clock = FakeClock(1000.0)
    async with app_with_clock(tmp_path, clock) as (base, _node, _egress), \
            aiohttp.ClientSession() as s:
        async def scrape(headers: dict[str, str]) -> str:
            async with s.get(base + "/metrics", headers=headers) as r:
                return await r.text()
        await scrape(PROMETHEUS)  # Prometheus watches the node before any viewer comes
        clock.now = 1001.0
        for path in ("/demo/v0/index.m3u8", "/demo/v0/seg_000.ts"):
            async with s.get(f"{base}{path}?sid=viewer-0001") as r:
                assert r.status == 200
                await r.read()
        plain, prom = await scrape({}), await scrape(PROMETHEUS)
        views = (("title", "demo"),)
        assert samples(plain, "edge360_views_total") == {views: 1}
        assert samples(prom, "edge360_views_total") == {views: 0}
        assert set(samples(prom, "edge360_egress_bytes_total").values()) == {0}
        assert min(samples(plain, "edge360_egress_bytes_total").values()) > 0
        # gauges are never held
        assert sum(samples(prom, "edge360_sessions_active").values()) == 1
        clock.now = 1001.0 + HOLD - 0.5
        assert samples(await scrape(PROMETHEUS), "edge360_views_total") == {views: 0}
        clock.now = 1001.0 + HOLD
        prom = await scrape(PROMETHEUS)
        assert samples(prom, "edge360_views_total") == {views: 1}
        assert samples(prom, "edge360_egress_bytes_total") == samples(
            plain, "edge360_egress_bytes_total")
