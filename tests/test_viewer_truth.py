"""Viewer truth in a real browser: hls.js in headless Chromium watches a whole 120 s title through
a real edge in front of a real origin, and the edge counts that viewer as active from its first
segment until its playback ends, then no more.

hls.js buffers far ahead when segments are small (its 60 MB buffer is never full), so it fetches
the whole title within a second or two and then asks nothing while it plays: the edge must count
the play-out of what was fetched, not the requests. The video plays at RATE times real speed and
the edge runs with `sessions.time_scale = RATE`, so the test stays short; a short idle timeout
makes "the session outlived its last request" plain. One run sends no CMCD (the EXTINF rule alone);
the other plays from a page on another origin with CMCD in headers, so every segment request is
CORS-preflighted with the CMCD-* fields and the session follows hls.js's CMCD session id. While it
plays, the edge exports watch seconds for the active session and every Grafana panel's metric."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.servers import REPO, ServerProcess, start_process
from tests.fixtures.titles import LONG_SECONDS, LONG_SEGMENT_SECONDS
from tests.fixtures.tools import require_hls, require_playwright, require_tool
from tests.test_monitoring_configs import DASHBOARD, dashboard_queries, metric_names

WATCH_SCRIPT = REPO / "tests" / "browser" / "watch.mjs"
RATE = 16
IDLE = 1.5
TITLE_SECONDS = LONG_SECONDS
SEGMENT_SECONDS = LONG_SEGMENT_SECONDS
#: the steering metrics have one series per pathway: none where steering is off, as here
STEERING = "edge360_steering_"


def read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body


def exported(base: str) -> dict[str, float]:
    """Sample name -> summed value of a node's /metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(read(base + "/metrics").decode()):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def watch_while_playing(page: str, edge: ServerProcess, origin: ServerProcess,
                        profile: Path) -> tuple[dict[str, object], list[dict[str, float]]]:
    """Run the Chromium driver; meanwhile read both nodes' /metrics (bounded). Returns the
    driver's JSON and the edge+origin expositions read while the session was active."""
    node = require_tool("node")
    chromium = require_tool("chromium")
    require_playwright()
    proc = subprocess.Popen(
        [node, str(WATCH_SCRIPT), "--url", page, "--stats", f"{edge.base}/api/stats",
         "--user-data-dir", str(profile), "--rate", str(RATE), "--timeout", "120",
         "--after", str(IDLE * 4), "--chromium", chromium],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while_active: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 150
        while proc.poll() is None and time.monotonic() < deadline:
            stats = json.loads(read(edge.base + "/api/stats"))
            if stats["sessions_active"] == 1:
                edge_now, origin_now = exported(edge.base), exported(origin.base)
                if json.loads(read(edge.base + "/api/stats"))["sessions_active"] == 1:
                    while_active.append({**origin_now, **edge_now})
            time.sleep(0.5)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert out.strip(), err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert isinstance(result, dict)
    assert result["ok"], (result["error"], err[-3000:])
    return result, while_active


@pytest.mark.parametrize("cmcd", [None, "headers"])
def test_a_viewer_counts_from_its_first_segment_until_playback_ends(
        long_media: Path, tmp_path: Path, cmcd: str | None) -> None:
    require_hls()
    origin: ServerProcess | None = None
    edge: ServerProcess | None = None
    try:
        origin = start_process(["serve", "--port", "0", "--media", str(long_media)])
        edge = start_process(["serve", "--role", "edge", "--port", "0", "--upstream",
                              origin.base],
                             {"EDGE360_SESSIONS_IDLE_TIMEOUT": str(IDLE),
                              "EDGE360_SESSIONS_TIME_SCALE": str(RATE)})
        if cmcd is None:
            page = f"{edge.base}/player?src=/long/master.m3u8"
        else:  # the page on the origin plays from the edge: another origin, CORS for all
            page = f"{origin.base}/player?src={edge.base}/long/master.m3u8&cmcd={cmcd}"
        result, while_active = watch_while_playing(page, edge, origin, tmp_path / "profile")
        final = json.loads(read(edge.base + "/api/stats"))
        final_metrics = exported(edge.base)
    finally:
        for sp in (edge, origin):
            if sp is not None:
                sp.stop()

    assert not result["pageErrors"], result["pageErrors"]
    assert result["duration"] == pytest.approx(TITLE_SECONDS, abs=1)
    media = result["media"]
    assert isinstance(media, list)
    segments = [m for m in media if m["path"].endswith(".ts") and m["method"] == "GET"]
    assert len(segments) >= TITLE_SECONDS // SEGMENT_SECONDS
    assert all(m["status"] == 200 for m in media), media
    samples = result["samples"]
    assert isinstance(samples, list)
    ended_at = result["endedAt"]
    assert isinstance(ended_at, int | float)
    # the scenario: hls.js fetched everything long before the end, so the idle rule alone
    # would have dropped this viewer in the middle of its playback
    last_request = max(m["at"] for m in media)
    assert last_request + 2 * IDLE * 1000 < ended_at, (last_request, ended_at)

    # exactly one viewer, active from its first segment until the video ended
    first_segment = min(m["at"] for m in segments)
    playing = [s for s in samples if s["at"] > first_segment + 500 and not s["ended"]]
    assert len(playing) >= 10, samples
    assert all(s["active"] == 1 and s["views"] == 1 for s in playing), [
        s for s in playing if s["active"] != 1 or s["views"] != 1]
    # and once playback is over, no more than the idle timeout later, no viewer at all
    after = result["after"]
    assert isinstance(after, list) and after and after[-1]["active"] == 0, after
    assert (final["sessions_active"], final["sessions_starting"], final["views_total"]) == (
        0, 0, 1)
    # its watch time is its playback: 120 media seconds at RATE (a little more if it stalled)
    watched = final_metrics["edge360_watch_seconds_total"]
    assert TITLE_SECONDS / RATE - 0.5 <= watched <= TITLE_SECONDS / RATE + 3, watched

    # while it played, watch seconds grew for the active session, and every panel of the
    # dashboard had its metric in what the nodes export; the steering panels read series per
    # pathway, which exist only on an edge that steers (docs/OVERLOAD.md; test_prometheus_live
    # checks them on one)
    assert while_active, "never read the metrics while the session was active"
    assert max(m.get("edge360_watch_seconds_total", 0.0) for m in while_active) > 0
    names = set().union(*(set(m) for m in while_active))
    for query in dashboard_queries(DASHBOARD):
        for name in metric_names(query):
            if name.startswith(STEERING):
                continue
            assert {name, name + "_total", name + "_bucket"} & names, (query, name)

    if cmcd is not None:
        # the session is hls.js's own CMCD session id (a UUID, not an edge360 sid): it came in
        # the CMCD-Session header of the master request, which carried no sid, and the edge
        # carried it into every playlist URI. Cross-origin requests with CMCD-* headers are
        # CORS-preflighted: they all succeeded, so the preflight allowed those headers.
        assert "sid=" not in media[0]["query"] and "CMCD" not in media[0]["query"], media[0]
        sids = {m["query"] for m in media[1:] if m["method"] == "GET"}
        assert len(sids) == 1 and len(next(iter(sids))) == len("?sid=") + 36, sids
        assert not [e for e in result["consoleErrors"] if "CORS" in str(e)], \
            result["consoleErrors"]
