"""Proof by replay, at small scale (docs/OVERLOAD.md, "Proof by replay"; the full-scale runs are
scripts/overload.py): `edge360 replay` against real edges, compressed in time.

- The peak at 1.3x one edge's capacity: the viewers it admits never stall, its count agrees
  with the replayer's ground truth, never passes the capacity, and the rest wait in its queue
  (following 503 + Retry-After with their tickets) and get in as others leave; the report gives
  their waits.
- Two edges as each other's steering pathways: the viewers split by the edges' capacities, and
  when one edge is killed its viewers move to the other without stalling.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import publish
from tests.overloadkit import steered_fleet
from tests.servers import REPO, start_process
from tests.test_replay_edge import make_film as make_long_film

SPEED = 30.0
IDLE = 30.0 / SPEED


def make_film(root: Path) -> Path:
    """test_replay_edge's film (15 s segments of a few KiB), its renditions at 300 and 700
    kbit/s: the players' buffer goal is then the same on both (hls.js's 600 s, under its 60 MB),
    so a rendition switch never leaves a player living on media the server never saw it fetch
    (a viewer already watching when the window opens inherits a buffer the server cannot know;
    switching to a rendition with a smaller goal, it would fetch nothing for longer than the
    play-out rule can see, its session would end and open again, and the node would count one
    viewer more than it admitted)."""
    made = make_long_film(root)
    master = made / "film" / "master.m3u8"
    master.write_text(master.read_text().replace("BANDWIDTH=400000", "BANDWIDTH=300000")
                      .replace("BANDWIDTH=2000000", "BANDWIDTH=700000"))
    publish(made)
    return made


def replay(target: str, report: Path, *, scale: float, window: str,
           duration: float | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "edge360", "replay", "--target", target, "--views", "1000000",
            "--peak", "60000", "--scale", str(scale), "--speed", f"{SPEED:g}", "--window",
            window, "--loop", "--report", str(report), "--seed", "3"]
    if duration is not None:
        args += ["--duration", str(duration)]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finished(proc: subprocess.Popen[str], report: Path) -> dict[str, object]:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    data = json.loads((report / "report.json").read_text())
    assert isinstance(data, dict)
    return data


def settings(capacity: int) -> dict[str, str]:
    # a queue hold of 6 s keeps Retry-After at 2-3 s: a queued viewer comes back within the
    # compressed window
    return {"EDGE360_SESSIONS_IDLE_TIMEOUT": f"{IDLE:g}",
            "EDGE360_SESSIONS_TIME_SCALE": f"{SPEED:g}",
            "EDGE360_SESSIONS_CAPACITY": str(capacity), "EDGE360_SESSIONS_QUEUE_HOLD": "6"}


def test_the_peak_at_1_3x_capacity_queues_the_rest_and_stalls_no_one(tmp_path: Path) -> None:
    media = make_film(tmp_path / "media")
    capacity = 30
    origin = start_process(["serve", "--port", "0", "--media", str(media)])
    try:
        edge = start_process(["serve", "--role", "edge", "--port", "0", "--upstream",
                              origin.base], settings(capacity))
        try:
            # ~39 viewers at the window's start (1.3 x 30), a dozen arriving, a dozen leaving
            report = finished(replay(f"{edge.base}/film/master.m3u8", tmp_path / "r",
                                     scale=0.00065, window="9.7-10.0"), tmp_path / "r")
        finally:
            assert edge.stop() == 0
    finally:
        assert origin.stop() == 0
    queue = report["queue"]
    assert isinstance(queue, dict)
    assert queue["queued_viewers"] >= 5, queue
    assert queue["admitted_from_queue"] >= 1, queue
    assert queue["wait_p50_s"] is not None and queue["wait_max_s"] > 0
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["stall_ratio"] == 0.0
    achieved, server = report["achieved_peak"], report["server_peak"]
    assert isinstance(achieved, int) and isinstance(server, float | int)
    assert server <= capacity
    assert abs(server - achieved) <= max(1.0, 0.01 * achieved), (achieved, server)


def test_two_edges_share_by_capacity_and_a_killed_ones_viewers_move(tmp_path: Path) -> None:
    media = make_film(tmp_path / "media")
    env = {k: v for k, v in settings(0).items() if "CAPACITY" not in k}
    with steered_fleet(media, {"e1": 20, "e2": 10}, env) as fleet:
        proc = replay(f"{fleet.bases['e1']}/film/master.m3u8", tmp_path / "r", scale=0.0004,
                      window="9.7-10.0", duration=30)
        loads: list[tuple[int, int]] = []
        for _ in range(60):  # the first 12 s: both edges up
            time.sleep(0.2)
            e1, e2 = (int(fleet.stats(n)["sessions_active"]) for n in ("e1", "e2"))  # type: ignore[call-overload]
            loads.append((e1, e2))
        on_e2 = loads[-1][1]
        assert fleet.edges["e2"].stop(signal.SIGKILL) != 0
        report = finished(proc, tmp_path / "r")
    # the split at the busiest moment with both up: e1 holds two thirds, e2 one third
    e1, e2 = max(loads, key=sum)
    assert e1 + e2 >= 15, loads
    assert abs(e1 / (e1 + e2) - 2 / 3) <= 0.10, loads
    steering = report["steering"]
    assert isinstance(steering, dict)
    # every viewer still playing on e2 moved to e1 (one on e2 may have quit meanwhile, its
    # session still counted while the media it fetched plays out)
    assert on_e2 >= 2 and steering["pathway_moves"] >= on_e2 // 2, (on_e2, steering)
    assert set(steering["segments_by_pathway"]) == {"e1", "e2"}
    assert report["stall_ratio"] is not None and report["stall_ratio"] < 0.01, report
