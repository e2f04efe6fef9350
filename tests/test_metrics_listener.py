"""server.metrics_listen with real processes: a second listener answers /metrics, /healthz and
/api/stats (content is 404 there) while the main port keeps serving content and its own /metrics;
with --workers N the monitoring port answers node-wide figures."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.fleets import fleet
from tests.fixtures.servers import free_port


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.get(url) as r:
        return r.status, await r.read()


def metric(text: bytes, name: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.decode().splitlines()
               if ln.startswith(name + "{") or ln.startswith(name + " "))


async def test_monitoring_port_serves_only_monitoring(tiny_media: Path, tmp_path: Path) -> None:
    mport = free_port()
    mon = f"http://127.0.0.1:{mport}"
    with fleet(tmp_path) as f:
        main = f.start("origin", ["--port", "0", "--media", str(tiny_media)],
                       {"EDGE360_SERVER_METRICS_LISTEN": f"127.0.0.1:{mport}"}).base
        for i in range(3):
            status, body = await fetch(f"{main}/tiny/v0/seg_000.ts?sid=viewer-{i:04d}")
            assert status == 200 and body == (tiny_media / "tiny/v0/seg_000.ts").read_bytes()
        status, text = await fetch(mon + "/metrics")
        assert status == 200
        assert metric(text, "edge360_views_total") == 3
        assert metric(text, "edge360_sessions_active") == 3
        status, body = await fetch(mon + "/api/stats")
        assert status == 200 and orjson.loads(body)["views_total"] == 3
        assert (await fetch(mon + "/healthz"))[0] == 200
        for path in ("/tiny/master.m3u8", "/tiny/v0/seg_000.ts", "/player", "/api/titles"):
            assert (await fetch(mon + path))[0] == 404, path
        # the public port keeps its own /metrics (docs/HTTP.md), the same figures
        status, text = await fetch(main + "/metrics")
        assert status == 200 and metric(text, "edge360_views_total") == 3
        assert (await fetch(main + "/tiny/master.m3u8"))[0] == 200
        assert f"metrics listening on {mon}/" in (tmp_path / "origin.log").read_text()


async def test_monitoring_port_is_node_wide_with_workers(tiny_media: Path, tmp_path: Path) -> None:
    mport = free_port()
    mon = f"http://127.0.0.1:{mport}"
    with fleet(tmp_path) as f:
        main = f.start("origin", ["--port", "0", "--media", str(tiny_media), "--workers", "3"],
                       {"EDGE360_SERVER_METRICS_LISTEN": f"127.0.0.1:{mport}",
                        "EDGE360_SERVER_ACCESS_LOG": "false"}).base
        views = 12
        for i in range(views):  # a fresh connection each: the kernel spreads them over workers
            assert (await fetch(f"{main}/tiny/v0/seg_001.ts?sid=viewer-{i:04d}"))[0] == 200
        status, body = await fetch(mon + "/api/stats")
        assert status == 200 and orjson.loads(body)["views_total"] == views
        status, text = await fetch(mon + "/metrics")
        assert status == 200
        assert metric(text, "edge360_views_total") == views
        segment_200 = [ln for ln in text.decode().splitlines()
                       if ln.startswith("edge360_requests_total{")
                       and 'kind="segment"' in ln and 'code="200"' in ln]
        assert segment_200 and float(segment_200[0].rsplit(" ", 1)[1]) == views
        assert (await fetch(mon + "/tiny/v0/seg_001.ts"))[0] == 404
