"""A real Prometheus scraping a real edge in front of a real origin: after traffic that includes an
upstream error, a stale hit, an eviction, an ended session and a late segment, every Grafana panel
query and every recording rule returns series made of edge360 data (the edge runs with overload
control on, so the Overload row's panels have theirs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.servers import ServerProcess, start_process
from tests.fixtures.titles import Rendition, add_rendition, make_title
from tests.fixtures.tools import require_tool
from tests.test_monitoring_configs import DASHBOARD, PROM, dashboard_queries, metric_names, rules

#: the big segment's size and the duration its playlist gives it: a slow reader makes it late
BIG_BYTES = 16 * 1024 * 1024
BIG_SECONDS = 0.25
#: seconds the whole wait for Prometheus (scrapes, rule evaluations) may take at most
PROM_WAIT = 60.0
#: labels Prometheus adds to every scraped series (the rest must come from edge360's exposition)
TARGET_LABELS = {"instance", "job", "role"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_media(root: Path) -> None:
    """The demo title plus a rendition whose one segment is big and short."""
    make_title(root)
    add_rendition(root / "demo", Rendition("big", 1, BIG_BYTES, duration=BIG_SECONDS))


@contextlib.contextmanager
def prometheus(tmp: Path, targets: dict[str, str]) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping `targets` (role -> host:port) every second with the
    repository's recording rules; stopped by its PID. Yields its base URL."""
    binary = require_tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROM / "recording.yml")],
        "scrape_configs": [{
            "job_name": "edge360", "metrics_path": "/metrics",
            "static_configs": [{"targets": [hp], "labels": {"role": role}}
                               for role, hp in targets.items()],
        }],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # ready within 60 s, or the test fails with its log
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("Prometheus never became ready: "
                                 + (tmp / "prometheus.log").read_text()[-2000:])
        yield base
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def slow_get(base: str, path: str) -> tuple[bytes, int]:
    """GET `path` reading at most ~6 MB/s through a small receive window (blocking; run in a
    thread). Returns (status line, body bytes received)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(30)
    with sock:
        sock.connect((host, int(port)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = bytearray()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            chunk = sock.recv(64 * 1024)
            if not chunk:
                break
            data += chunk
            time.sleep(0.01)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], len(body)


def exposition_labels(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """(sample names, label name -> values) of an exposition."""
    names: set[str] = set()
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            names.add(s.name)
            for k, v in s.labels.items():
                values.setdefault(k, set()).add(v)
    return names, values


class Prom:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s = session
        self.base = base

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with self.s.get(self.base + "/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert r.status == 200 and body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def until(self, expr: str, deadline: float) -> list[dict[str, Any]]:
        """The result of `expr` once it is non-empty (polled until `deadline`); [] if never."""
        while True:
            result = await self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.5)


async def edge_value(s: aiohttp.ClientSession, edge: str, name: str,
                     labels: dict[str, str] | None = None) -> float:
    async with s.get(edge + "/metrics") as r:
        text = await r.text()
    want = labels or {}
    return sum(smp.value for f in text_string_to_metric_families(text) for smp in f.samples
               if smp.name == name and all(smp.labels.get(k) == v for k, v in want.items()))


async def keep_watching(s: aiohttp.ClientSession, edge: str, stop: asyncio.Event) -> int:
    """One viewer who keeps its session open (a request every 0.5 s, 240 at most)."""
    sid = "keeper-0001"
    async with s.get(f"{edge}/demo/v0/index.m3u8?sid={sid}") as r:
        assert r.status == 200
    n = 0
    for n in range(240):
        async with s.get(f"{edge}/demo/v0/seg_{n % 4:03d}.ts?sid={sid}") as r:
            await r.read()
            assert r.status == 200
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set():
            break
    return n


async def until_edge(s: aiohttp.ClientSession, edge: str, what: str, name: str,
                     labels: dict[str, str] | None = None) -> None:
    for _ in range(60):
        if await edge_value(s, edge, name, labels) > 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the edge never counted {what} ({name} {labels})")


async def scraped_after(prom: Prom, after: float, deadline: float) -> list[dict[str, Any]]:
    """Wait until Prometheus has scraped both nodes after `after` (time.time()); their `up`."""
    while True:
        up = await prom.query('timestamp(up{job="edge360"} == 1)')
        if len(up) == 2 and min(float(x["value"][1]) for x in up) > after:
            return up
        assert time.monotonic() < deadline, f"Prometheus did not scrape both nodes: {up}"
        await asyncio.sleep(0.5)


async def traffic(origin: str, edge: str, prom_base: str) -> None:
    async with aiohttp.ClientSession() as s:
        # Prometheus watches the nodes before the viewers come, as it would in production
        await scraped_after(Prom(s, prom_base), 0.0, time.monotonic() + PROM_WAIT)
        stop = asyncio.Event()
        keeper = asyncio.create_task(keep_watching(s, edge, stop))
        try:
            await drive(s, origin, edge)
            await check_prometheus(Prom(s, prom_base), s, origin, edge)
        finally:
            stop.set()
            await asyncio.wait_for(keeper, 30)


async def drive(s: aiohttp.ClientSession, origin: str, edge: str) -> None:
    # a viewer who watches briefly, so its session ends (idle timeout 2 s): watch seconds; what
    # it watches (about 1.2 MB) overflows the edge's 1 MiB memory tier: evictions
    for path in ("/demo/v1/index.m3u8", "/demo/v1/seg_000.ts", "/demo/v1/seg_001.ts",
                 "/demo/v1/seg_002.ts", "/demo/v1/seg_003.ts", "/demo/master_br.m3u8",
                 "/demo/br/index.m3u8", "/demo/br/stream.ts"):
        async with s.get(f"{edge}{path}?sid=brief-0001") as r:
            await r.read()
            assert r.status == 200, path
    # an upstream error: the origin answers 404 through the edge
    async with s.get(f"{edge}/demo/v0/seg_404.ts?sid=brief-0002") as r:
        assert r.status == 404
    # a stale hit: the master lives 1 s (origin.master_max_age); once stale, the edge answers it
    # from the cache (stale-while-revalidate) and refreshes behind
    results = []
    for _ in range(40):
        async with s.get(f"{edge}/demo/master.m3u8?sid=stale-0001") as r:
            await r.read()
            assert r.status == 200
            results.append(r.headers["X-Cache"])
        if results[-1] == "STALE":
            break
        await asyncio.sleep(0.3)
    assert results[-1] == "STALE", results
    # a late segment: BIG_BYTES said to last BIG_SECONDS, read slowly through a small window
    async with s.get(f"{edge}/demo/big/index.m3u8?sid=slow-0001") as r:
        assert r.status == 200
    status, got = await asyncio.to_thread(slow_get, edge, "/demo/big/seg_000.ts?sid=slow-0001")
    assert (status, got) == (b"HTTP/1.1 200 OK", BIG_BYTES)
    await until_edge(s, edge, "a late segment", "edge360_late_segments_total")
    await until_edge(s, edge, "a stale hit", "edge360_cache_requests_total", {"result": "stale"})
    await until_edge(s, edge, "an upstream 404", "edge360_upstream_requests_total",
                     {"code": "404"})
    await until_edge(s, edge, "an ended session", "edge360_views_total")
    await until_edge(s, edge, "an eviction", "edge360_cache_evictions_total", {"tier": "memory"})
    for _ in range(60):  # the brief viewer's session ends 2 s after its last request
        async with s.get(edge + "/metrics") as r:
            if "edge360_watch_seconds_total{" in await r.text():
                break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("no session ended on the edge")


async def check_prometheus(prom: Prom, s: aiohttp.ClientSession, origin: str, edge: str) -> None:
    deadline = time.monotonic() + PROM_WAIT
    up = await scraped_after(prom, time.time(), deadline)

    names: set[str] = set()
    values: dict[str, set[str]] = {}
    for base in (origin, edge):
        async with s.get(base + "/metrics") as r:
            n, v = exposition_labels(await r.text())
        names |= n
        for k, vs in v.items():
            values.setdefault(k, set()).update(vs)
    instances = {x["metric"]["instance"] for x in up}

    # the traffic is in Prometheus, not only in the nodes
    viewers = await prom.query('sum(edge360_sessions_active{role="edge"})')
    assert viewers and float(viewers[0]["value"][1]) >= 1, viewers
    for expr in ('edge360_late_segments_total{role="edge"}',
                 'edge360_cache_requests_total{role="edge", result="stale"}',
                 'edge360_upstream_requests_total{role="edge", code!="200"}',
                 'edge360_watch_seconds_total{role="edge"}'):
        assert await prom.until(expr, deadline), expr

    queries = dashboard_queries(DASHBOARD)
    assert len(queries) >= 10
    empty = []
    for query in queries:
        # every metric the panel reads is one edge360 exports (histograms by their buckets)
        for name in metric_names(query):
            assert {name, name + "_bucket"} & names, (query, name)
        result = await prom.until(query, deadline)
        if not result:
            empty.append(query)
            continue
        for series in result:
            for label, value in series["metric"].items():
                if label == "instance":
                    assert value in instances, (query, series)
                elif label not in TARGET_LABELS:
                    assert value in values.get(label, set()), (query, label, value)
    assert not empty, f"panel queries without data: {empty}"

    for rule in rules("recording.yml"):
        result = await prom.until(rule["record"], deadline)
        assert result, f"recording rule {rule['record']} yields nothing"
        for series in result:
            assert set(series["metric"]) - {"__name__"} <= TARGET_LABELS, series


@pytest.mark.timeout(240)
def test_dashboard_panels_and_recording_rules_have_data(tmp_path: Path) -> None:
    require_tool("prometheus")
    media = tmp_path / "media"
    make_media(media)
    dead = f"http://127.0.0.1:{free_port()}"  # a second parent that is down: connect errors
    o: ServerProcess | None = None
    e: ServerProcess | None = None
    try:
        o = start_process(["serve", "--role", "origin", "--port", "0", "--media", str(media)],
                          {"EDGE360_ORIGIN_MASTER_MAX_AGE": "1"})
        port = free_port()
        # overload control on (docs/OVERLOAD.md), none of it binding: a capacity, an egress
        # budget, and content steering with the edge as its own one pathway, so the dashboard's
        # Overload row has data too
        e = start_process(["serve", "--role", "edge", "--port", str(port), "--upstream", o.base,
                           "--upstream", dead],
                          {"EDGE360_SESSIONS_IDLE_TIMEOUT": "2",
                           "EDGE360_EDGE_CACHE_MEMORY_BYTES": "1MiB",
                           "EDGE360_EDGE_HEALTH_INTERVAL": "1",
                           "EDGE360_SESSIONS_CAPACITY": "1000",
                           "EDGE360_SERVER_EGRESS_LIMIT": "10000000000",
                           "EDGE360_STEERING_PATHWAYS": f"edge=http://127.0.0.1:{port}"})
        targets = {"origin": o.base.removeprefix("http://"),
                   "edge": e.base.removeprefix("http://")}
        (tmp_path / "prom").mkdir()
        with prometheus(tmp_path / "prom", targets) as prom_base:
            asyncio.run(traffic(o.base, e.base, prom_base))
    finally:
        for proc in (e, o):
            if proc is not None:
                assert proc.stop() == 0, proc.stderr[-2000:]


async def one_view(edge: str, prom_base: str) -> None:
    async with aiohttp.ClientSession() as s:
        prom = Prom(s, prom_base)
        deadline = time.monotonic() + PROM_WAIT
        # Prometheus watches the fresh edge before its first viewer comes
        assert await prom.until('up{job="edge360"} == 1', deadline)
        sent = 0
        for path in ("/demo/master.m3u8", "/demo/v1/index.m3u8", "/demo/v1/seg_000.ts"):
            async with s.get(f"{edge}{path}?sid=only-viewer1") as r:
                assert r.status == 200, path
                sent += len(await r.read())
        views = await prom.until("increase(edge360_views_total[1m]) >= 1", deadline)
        assert views, "the one view never showed in increase()"
        # Prometheus saw the series at 0 first, and no worker ever took the value back
        assert float((await prom.query("min_over_time(edge360_views_total[1m])"))[0]
                     ["value"][1]) == 0
        for name in ("edge360_views_total", "edge360_egress_bytes_total",
                     "edge360_requests_total"):
            resets = await prom.query(f"max(resets({name}[1m]))")
            assert float(resets[0]["value"][1]) == 0, name
        egress = await prom.until("sum(increase(edge360_egress_bytes_total[1m]))", deadline)
        assert float(egress[0]["value"][1]) >= 0.9 * sent, (egress, sent)


@pytest.mark.timeout(180)
def test_one_view_on_a_fresh_edge_is_seen_by_increase(tmp_path: Path) -> None:
    """Two workers and keep-alive shorter than the scrape interval: each scrape may reach
    either worker, and both hold a new label set alike (the hub keeps the births)."""
    require_tool("prometheus")
    media = tmp_path / "media"
    make_title(media)
    o: ServerProcess | None = None
    e: ServerProcess | None = None
    try:
        o = start_process(["serve", "--role", "origin", "--port", "0", "--media", str(media)])
        e = start_process(["serve", "--role", "edge", "--port", "0", "--upstream", o.base,
                           "--workers", "2"], {"EDGE360_LIMITS_KEEPALIVE_TIMEOUT": "0.3"})
        (tmp_path / "prom").mkdir()
        with prometheus(tmp_path / "prom", {"edge": e.base.removeprefix("http://")}) as base:
            asyncio.run(one_view(e.base, base))
    finally:
        for proc in (e, o):
            if proc is not None:
                assert proc.stop() == 0, proc.stderr[-2000:]
