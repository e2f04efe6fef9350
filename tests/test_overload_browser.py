"""hls.js in Chromium follows a content steering change between two real edges (docs/OVERLOAD.md,
"Steering"): it plays from the first edge; that edge starts draining (SIGTERM with a drain delay,
so it still serves), the steering manifests put the other edge first, and hls.js loads its media
from the other edge while the video plays on, with no error."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.fixtures.fleets import steered_fleet
from tests.fixtures.servers import REPO
from tests.fixtures.tools import require_hls, require_playwright, require_tool

STEER_SCRIPT = REPO / "tests" / "browser" / "steer.mjs"


def test_hlsjs_follows_a_steering_change(long_media: Path, tmp_path: Path) -> None:
    require_hls()
    node = require_tool("node")
    chromium = require_tool("chromium")
    require_playwright()
    with steered_fleet(long_media, {"e1": 20, "e2": 10}, drain_delay=10) as fleet:
        e1 = fleet.bases["e1"]
        port = {name: base.rsplit(":", 1)[1] for name, base in fleet.bases.items()}
        proc = subprocess.Popen(
            [node, str(STEER_SCRIPT), "--url", f"{e1}/player?src=/long/master.m3u8",
             "--from", port["e1"], "--to", port["e2"], "--user-data-dir",
             str(tmp_path / "profile"), "--timeout", "90", "--chromium", chromium],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        drained_at = None
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            for line in proc.stdout:  # bounded: the driver exits by its own --timeout
                lines.append(line)
                if line.strip() == "PLAYING" and drained_at is None:
                    drained_at = time.monotonic()
                    fleet.edges["e1"].proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert lines, err[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], (result["error"], err[-3000:])
    assert not result["pageErrors"], result["pageErrors"]
    assert drained_at is not None
    media = result["media"]
    before = [m for m in media if m["at"] < result["playingAt"]]
    first = next(i for i, m in enumerate(media) if m["port"] == port["e2"])
    moved = media[first:]
    # it started on e1 (the master's PATHWAY-ID); after the drain it loads from e2 only
    assert before and all(m["port"] == port["e1"] for m in before), before
    assert moved and all(m["port"] == port["e2"] for m in moved), moved
    assert all(m["status"] == 200 for m in media), media
    assert result["steering"] and all(s["status"] == 200 for s in result["steering"])
    assert {s["port"] for s in result["steering"]} == {port["e1"], port["e2"]}
    # the video played on past the move
    played = [s["currentTime"] for s in result["samples"] if s["at"] > result["movedAt"]]
    assert played and played[-1] > played[0], result["samples"][-10:]
