"""Acceptance for the replayer: a live, time-compressed replay against a real edge in front of a
real origin (both `edge360 serve` processes on loopback), `edge360 replay` run as a subprocess.

The replayer's ground truth (by the edge's counting rule: play-out when its /api/stats reports
`time_scale`, set here to the replay's speed, else first media segment .. last request + idle
timeout) and the edge's own `edge360_sessions_active`, sampled once a second, must agree within
3 % at the peak, with one edge process and with `--workers 2` (whose hub counts node-wide).

The title is generated with 15 s segments of a few KiB so that ~540 viewers at speed 10 stay within
what two cores carry alongside the replayer (~700 req/s; the 2 s `tiny` title would ask ~5 000 and
an overloaded edge answers later than the idle timeout, which splits sessions). A segment must stay
well under the real 30 s idle timeout: a player asks once per segment, and at 30 s segments every
gap between two requests would be the idle timeout itself, so sessions would end and reopen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO, start_process
from tests.fixtures.titles import Rendition, make_title

SPEED = 10.0
IDLE = 30.0 / SPEED                    # the compressed idle timeout the replayer asks for
SEGMENT_S = 15
SEGMENTS = 12


def edge_settings(tmp_path: Path) -> dict[str, str]:
    """The compressed idle timeout, and sessions.time_scale where this edge360 knows the key
    (an edge before the play-out rule refuses it as unknown, and counts by requests)."""
    env = {"EDGE360_SESSIONS_IDLE_TIMEOUT": f"{IDLE:g}"}
    probe = tmp_path / "empty.toml"
    probe.write_text("")
    known = subprocess.run(
        [sys.executable, "-m", "edge360", "check-config", str(probe)], cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")},
             "EDGE360_SESSIONS_TIME_SCALE": f"{SPEED:g}"},
        capture_output=True, text=True, timeout=60, check=False).returncode == 0
    if known:
        env["EDGE360_SESSIONS_TIME_SCALE"] = f"{SPEED:g}"
    return env


def make_film(root: Path, name: str = "film") -> Path:
    """A two-rendition segmented title with long segments and small bodies."""
    make_title(root, name, [Rendition(rendition, SEGMENTS, size, growth=1, duration=SEGMENT_S,
                                      bandwidth=bandwidth)
                            for rendition, bandwidth, size in (("lo", 400_000, 3000),
                                                               ("hi", 2_000_000, 6000))],
               byteranges=None, seed=11)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_through_a_real_edge_agrees_with_its_metrics(tmp_path: Path, workers: int) -> None:
    media = make_film(tmp_path / "media")
    settings = edge_settings(tmp_path)
    origin = start_process(["serve", "--role", "origin", "--port", "0", "--media", str(media)])
    try:
        edge = start_process(
            ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base,
             "--workers", str(workers)], settings)
        try:
            report_dir = tmp_path / "report"
            # the peak hour slice: ~480 viewers already watching, ~50 arriving, some leaving
            done = subprocess.run(
                [sys.executable, "-m", "edge360", "replay",
                 "--target", f"{edge.base}/film/master.m3u8", "--views", "1000000",
                 "--peak", "60000", "--scale", "0.009", "--speed", f"{SPEED:g}",
                 "--window", "9.7-9.73", "--loop", "--report", str(report_dir), "--seed", "1"],
                cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
            stats = json.loads(subprocess.run(
                [sys.executable, "-c", "import sys,urllib.request;sys.stdout.write("
                 f"urllib.request.urlopen('{edge.base}/api/stats').read().decode())"],
                capture_output=True, text=True, timeout=30, check=True).stdout)
        finally:
            assert edge.stop() == 0
    finally:
        assert origin.stop() == 0
    report = json.loads((report_dir / "report.json").read_text())
    # the replayer derived the compressed idle timeout and the edge counts by it
    assert f"sessions.idle_timeout = {IDLE:.3g}" in done.stderr
    assert f"sessions.time_scale = {SPEED:g}" in done.stderr
    assert report["idle_timeout"] == pytest.approx(IDLE)
    # an edge with the play-out rule reports the time scale it was given, and the truth uses it
    playout = "EDGE360_SESSIONS_TIME_SCALE" in settings
    assert report["time_scale"] == (SPEED if playout else None)
    assert report["counting_rule"] == ("play-out" if playout else "requests")
    assert report["speed"] == SPEED and report["window"] == [9.7, 9.73]
    assert report["viewers_started"] >= 500
    assert report["requests"] > 0 and report["errors"] == 0, report["errors_by_kind"]
    achieved, server = report["achieved_peak"], report["server_peak"]
    assert achieved >= 150
    assert server is not None
    assert abs(server - achieved) <= 0.03 * achieved, (achieved, server)
    # every viewer that fetched media is one view at the edge (the probe fetched only the
    # master playlist, and a viewer that quit before its first segment never was one): no
    # session was split by a gap longer than the idle timeout (one answer cut off at the
    # window's end may reach the edge but not the replayer)
    viewing = report["viewers_with_media"]
    assert 0.95 * report["viewers_started"] <= viewing <= report["viewers_started"]
    assert viewing <= stats["views_total"] <= viewing * 1.01 + 1, (report, stats)
    # sessions ended during the run: never were all the viewers active at once
    assert stats["sessions_peak"] < stats["views_total"]
