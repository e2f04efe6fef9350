"""/metrics and /api/stats: a clean exposition (promtool), session gauges exact under concurrency
through a real edge in front of a real origin (which counts no viewer for the edge), and expiry,
peak and the recent peak under a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from edge360.node.state import NodeState
from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import edge, get, origin
from tests.fixtures.servers import make_config, running_node, server_process
from tests.fixtures.titles import make_title
from tests.fixtures.tools import require_tool

VIEWERS = 300
#: seconds any bounded wait in this file gives up after
WAIT = 10.0


def parse(text: str) -> dict[str, list[Sample]]:
    """Samples of an exposition by sample name (counters keep their _total)."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total(samples: dict[str, list[Sample]], name: str) -> float:
    return sum(s.value for s in samples.get(name, []))


async def fetch_json(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with s.get(url) as r:
        assert r.status == 200, url
        data: dict[str, Any] = await r.json()
        return data


async def scrape(s: aiohttp.ClientSession, base: str) -> dict[str, list[Sample]]:
    async with s.get(base + "/metrics") as r:
        assert r.status == 200
        return parse(await r.text())


def sid(n: int) -> str:
    return f"viewer-{n:05d}"


# -- the exposition -------------------------------------------------------------------------------

async def test_promtool_check_metrics_is_clean_on_origin_and_edge(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    make_title(tmp_path)
    async with origin(tmp_path) as o, edge([o]) as e, aiohttp.ClientSession() as s:
        for path in ("/demo/master.m3u8", f"/demo/v0/index.m3u8?sid={sid(1)}",
                     f"/demo/v0/seg_000.ts?sid={sid(1)}", f"/demo/v1/seg_001.ts?sid={sid(2)}",
                     "/demo/br/stream.ts", "/demo/missing.ts"):
            await get(s, e + path)
            await get(s, o + path)
        for base in (o, e):
            async with s.get(base + "/metrics") as r:
                body = await r.read()
            samples = parse(body.decode())
            # the traffic shows in what promtool checks, so the check is not of an empty page
            assert total(samples, "edge360_requests_total") >= 6
            assert total(samples, "edge360_views_total") >= 2
            result = await asyncio.to_thread(
                subprocess.run, [promtool, "check", "metrics"], input=body, capture_output=True,
                timeout=60, check=False)
            assert result.returncode == 0, (base, result.stdout, result.stderr)
            assert result.stdout.strip() == b"" and result.stderr.strip() == b"", base
            # the peak gauges carry no labels (docs/SESSIONS.md)
            for name in ("edge360_sessions_peak", "edge360_sessions_peak_recent"):
                (only,) = samples[name]
                assert only.labels == {}, (name, only.labels)


# -- exact under concurrency, through a real chain --------------------------------------------

async def _viewer(s: aiohttp.ClientSession, base: str, n: int) -> list[int]:
    rendition = ("v0", "v1")[n % 2]
    codes = []
    for path in (f"/demo/{rendition}/index.m3u8", f"/demo/{rendition}/seg_000.ts",
                 f"/demo/{rendition}/seg_{1 + n % 3:03d}.ts"):
        async with s.get(f"{base}{path}?sid={sid(n)}") as r:
            await r.read()
            codes.append(r.status)
    return codes


def test_sessions_exact_under_concurrency_and_origin_counts_no_viewer(tmp_path: Path) -> None:
    make_title(tmp_path)
    env = {"EDGE360_SESSIONS_IDLE_TIMEOUT": "600"}
    with server_process(["serve", "--role", "origin", "--port", "0", "--media", str(tmp_path)],
                        env) as o, \
            server_process(["serve", "--role", "edge", "--port", "0", "--upstream", o.base],
                           env) as e:
        asyncio.run(_concurrent(o.base, e.base))


async def _concurrent(origin_base: str, edge_base: str) -> None:
    # many connections at once: each viewer's requests may land on any of 64 sockets
    connector = aiohttp.TCPConnector(limit=64, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as s:
        results = await asyncio.gather(*(_viewer(s, edge_base, n) for n in range(VIEWERS)))
        assert all(codes == [200, 200, 200] for codes in results)
        m = await scrape(s, edge_base)
        assert total(m, "edge360_sessions_active") == VIEWERS
        by_rendition: dict[str, float] = {}
        for smp in m["edge360_sessions_active"]:
            by_rendition[smp.labels["rendition"]] = (by_rendition.get(smp.labels["rendition"], 0)
                                                     + smp.value)
        assert {k: v for k, v in by_rendition.items() if v} == {"v0": VIEWERS / 2,
                                                                "v1": VIEWERS / 2}
        assert total(m, "edge360_views_total") == VIEWERS
        assert [x.value for x in m["edge360_sessions_peak"]] == [VIEWERS]
        assert [x.value for x in m["edge360_sessions_peak_recent"]] == [VIEWERS]
        stats = await fetch_json(s, edge_base + "/api/stats")
        assert (stats["sessions_active"], stats["views_total"], stats["sessions_peak"]) == (
            VIEWERS, VIEWERS, VIEWERS)
        # the origin behind the edge served it (CDN-Loop: edge360) and counted no viewer for it
        om = await scrape(s, origin_base)
        assert total(om, "edge360_requests_total") >= 2 * 4 + 2  # both renditions' files
        assert total(om, "edge360_sessions_active") == 0
        assert total(om, "edge360_views_total") == 0
        assert [x.value for x in om["edge360_sessions_peak"]] == [0]
        ostats = await fetch_json(s, origin_base + "/api/stats")
        assert (ostats["sessions_active"], ostats["views_total"], ostats["sessions_peak"]) == (
            0, 0, 0)


# -- expiry and peaks under a fake clock ------------------------------------------------------

@contextlib.asynccontextmanager
async def app_with_clock(media: Path, clock: FakeClock) -> AsyncIterator[
        tuple[str, NodeState, deque[tuple[float, int]]]]:
    """An in-process origin on 127.0.0.1:0 whose clock the test sets; yields (base URL, node,
    egress samples) so the test can wait for the once-a-second sampler."""
    config = make_config({"server.role": "origin", "origin.media": str(media),
                          "sessions.idle_timeout": 10, "sessions.peak_window": 5})
    async with running_node(config, clock=clock) as (url, app):
        yield url, app.node, app.endpoints.egress


async def _sampled_at(samples: deque[tuple[float, int]], at: float) -> None:
    """Wait (bounded) until the egress sampler has recorded a sample at fake time `at`."""
    for _ in range(int(WAIT / 0.05)):
        if samples and samples[-1][0] == at:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no egress sample at {at}: {list(samples)}")


async def test_expiry_exact_at_idle_timeout_peak_kept_recent_peak_windowed(tmp_path: Path) -> None:
    make_title(tmp_path)
    clock = FakeClock(1000.0)
    async with app_with_clock(tmp_path, clock) as (base, _node, egress), \
            aiohttp.ClientSession() as s:

        async def hit(path: str, who: str) -> None:
            st, _h, _b = await get(s, f"{base}{path}?sid={who}")
            assert st == 200, path

        async def figures() -> tuple[dict[str, Any], dict[str, list[Sample]]]:
            stats = await fetch_json(s, base + "/api/stats")
            m = await scrape(s, base)
            # /metrics and /api/stats read the same tracker at the same (fake) moment
            assert total(m, "edge360_sessions_active") == stats["sessions_active"]
            assert [x.value for x in m["edge360_sessions_peak"]] == [stats["sessions_peak"]]
            assert [x.value for x in m["edge360_sessions_peak_recent"]] == [
                stats["sessions_peak_recent"]]
            assert total(m, "edge360_views_total") == stats["views_total"]
            for name in ("edge360_sessions_peak", "edge360_sessions_peak_recent"):
                assert [x.labels for x in m[name]] == [{}]
            return stats, m

        await _sampled_at(egress, 1000.0)  # the sampler's baseline: nothing sent yet
        a, b, c = sid(1), sid(2), sid(3)
        await hit("/demo/v0/index.m3u8", a)  # a playlist alone: starting, no view
        await hit("/demo/v0/seg_000.ts", a)  # playback starts: 4 s of media, until 1004
        await hit("/demo/v1/seg_001.ts", b)  # also until 1004
        await hit("/demo/master.m3u8", c)  # only ever a playlist: never a view
        stats, m = await figures()
        assert (stats["sessions_active"], stats["sessions_peak"], stats["views_total"],
                stats["sessions_starting"]) == (2, 2, 2, 1)
        for key in ("sessions_active", "sessions_peak", "views_total", "sessions_starting"):
            assert type(stats[key]) is int, key
        assert stats["idle_timeout"] == 10 and stats["time_scale"] == 1
        assert stats["sessions_peak_time"] == 1000.0
        assert stats["top_titles"] == [["demo", 2]]
        assert {k: n for k, n in stats["rendition_mix"].items() if n} == {"v0": 1, "v1": 1}
        assert {(x.labels["title"], x.labels["rendition"]): x.value
                for x in m["edge360_sessions_active"] if x.value} == {
            ("demo", "v0"): 1, ("demo", "v1"): 1}
        assert total(m, "edge360_sessions_starting") == 1
        sent = stats["egress_bytes_total"]
        assert sent == total(m, "edge360_egress_bytes_total") and sent > 90_000

        # the egress rate: bytes over fake seconds between the sampler's first and last samples
        clock.now = 1004.0
        await _sampled_at(egress, 1004.0)
        stats, _ = await figures()
        assert stats["egress_bits_per_second"] == round(sent * 8 / 4.0, 1)

        clock.now = 1005.0
        await hit("/demo/v0/seg_001.ts", a)  # its buffer ran dry at 1004: plays until 1009
        clock.now = math.nextafter(1010.0, 0.0)
        stats, _ = await figures()
        assert (stats["sessions_active"], stats["sessions_starting"]) == (2, 1)
        clock.now = 1010.0  # exactly idle_timeout after c's only request: c has ended
        stats, _ = await figures()
        assert (stats["sessions_active"], stats["sessions_starting"]) == (2, 0)
        clock.now = math.nextafter(1014.0, 0.0)  # b played out at 1004: not ended yet
        stats, _ = await figures()
        assert stats["sessions_active"] == 2
        clock.now = 1014.0  # exactly idle_timeout after b's media played out: ended
        stats, m = await figures()
        assert (stats["sessions_active"], stats["sessions_peak"], stats["views_total"]) == (1, 2, 2)
        assert stats["sessions_peak_recent"] == 2 and stats["sessions_peak_time"] == 1000.0
        assert {k: n for k, n in stats["rendition_mix"].items() if n} == {"v0": 1}
        # watch seconds are settled up to idle_timeout ago (1004): b's 4 s and a's first 4 s
        assert [x.value for x in m["edge360_watch_seconds_total"]] == [8.0]

        clock.now = 1016.0
        await hit("/demo/v0/seg_002.ts", a)  # dry again: plays until 1020
        clock.now = 1018.5  # 2 held until 1014, inside the 5 s window
        stats, _ = await figures()
        assert (stats["sessions_active"], stats["sessions_peak_recent"]) == (1, 2)
        clock.now = 1019.0  # the window has passed 1014: the recent peak is what held since
        stats, _ = await figures()
        assert (stats["sessions_active"], stats["sessions_peak"],
                stats["sessions_peak_recent"]) == (1, 2, 1)

        clock.now = 1020.0  # b comes back after its session ended: a new session, a new view
        await hit("/demo/v1/seg_002.ts", b)
        stats, _ = await figures()
        assert (stats["sessions_active"], stats["sessions_peak"], stats["views_total"],
                stats["sessions_peak_recent"]) == (2, 2, 3, 2)

        clock.now = 1030.0  # a: its media played out at 1020, ends exactly now
        stats, m = await figures()
        assert (stats["sessions_active"], stats["sessions_peak"], stats["views_total"]) == (1, 2, 3)
        assert stats["sessions_peak_recent"] == 2
        # a: 1000..1020, and b's first session: 1000..1004 (its second has just begun)
        assert [x.value for x in m["edge360_watch_seconds_total"]] == [24.0]


def test_per_title_counters_stay_bounded_under_made_up_paths() -> None:
    from edge360.node.counters import MAX_LABELS, OTHER_LABEL, Counters, bounded
    c = Counters()
    for i in range(MAX_LABELS + 500):
        c.egress[bounded(c.egress, (f"title{i}", "none"))] += 1
    assert len(c.egress) == MAX_LABELS + 1
    assert c.egress[OTHER_LABEL] == 500
    assert c.egress[bounded(c.egress, ("title0", "none"))] == 1  # known pairs keep counting
