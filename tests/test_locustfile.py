"""The Locust version of the replay (benchmarks/locustfile.py) runs against a real server."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.servers import REPO, start_process
from tests.fixtures.tools import require_module


def test_locustfile_plays_against_a_local_origin(tiny_media: Path, tmp_path: Path) -> None:
    require_module("locust")
    sp = start_process(["serve", "--port", "0", "--media", str(tiny_media)])
    try:
        # the whole first day in 6 s (the shape ends the run, not --run-time)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")},
               "REPLAY_MASTER": "/tiny/master.m3u8", "REPLAY_SPEED": "14400",
               "REPLAY_SCALE": "0.0005", "PYTHONPATH": str(REPO / "src")}
        out = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(REPO / "benchmarks" / "locustfile.py"),
             "--headless", "--host", sp.base, "--run-time", "3s", "--only-summary",
             "--csv", str(tmp_path / "run"), "--stop-timeout", "2"],
            capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
        assert out.returncode in (0, 1), out.stderr[-2000:]
    finally:
        assert sp.stop(signal.SIGTERM) == 0
    with open(tmp_path / "run_stats.csv") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, out.stderr[-2000:]
    # the user really plays: a master, a media playlist and segments were fetched
    names = set(rows)
    assert {"master", "segment"} <= names, names
