"""Proof by replay, at small scale (docs/OVERLOAD.md, "Proof by replay"): scripts/overload.py,
the full-scale runs, with a few dozen viewers compressed 30 times, against real edges.

- The peak at 1.3x one edge's capacity: the viewers it admits never stall, its count agrees
  with the replayer's ground truth, never passes the capacity, and the rest wait in its queue
  (following 503 + Retry-After with their tickets) and get in as others leave; the report gives
  their waits.
- Two edges as each other's steering pathways: the viewers split by the edges' capacities, and
  when one edge is killed its viewers move to the other without stalling.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from tests.fixtures.servers import REPO

SMALL = ["--speed", "30", "--workers", "1", "--replay-workers", "1"]


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("overload", REPO / "scripts" / "overload.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path: Path, *argv: str) -> dict[str, object]:
    code = script().main([*argv, "--out", str(tmp_path / "out"), *SMALL])
    result = json.loads((tmp_path / "out" / "overload.json").read_text())
    assert isinstance(result, dict)
    assert code == 0, {k: v for k, v in result.items() if k != "loads"}
    return result


def test_the_peak_at_1_3x_capacity_queues_the_rest_and_stalls_no_one(tmp_path: Path) -> None:
    # ~39 viewers at the window's start (1.3 x 30), a few arriving and leaving; a queue hold of
    # 6 s keeps Retry-After at 2-3 s, so a queued viewer comes back within the short window
    result = run(tmp_path, "queue", "--capacity", "30", "--window", "9.7-9.9",
                 "--queue-hold", "6")
    queue = result["queue"]
    assert isinstance(queue, dict)
    assert queue["queued_viewers"] >= 5 and queue["admitted_from_queue"] >= 1, queue
    assert queue["wait_p50_s"] is not None and queue["wait_max_s"] > 0
    assert result["stall_ratio"] == 0.0 and result["errors_by_kind"] == {}
    assert result["server_peak"] <= 30  # type: ignore[operator]


def test_two_edges_share_by_capacity_and_a_killed_ones_viewers_move(tmp_path: Path) -> None:
    # ~24 viewers against edges of capacity 20 and 10; the second is killed after 12 s
    result = run(tmp_path, "steer", "--capacity", "20", "--window", "9.7-10.0",
                 "--duration", "24")
    assert result["share_error_max"] <= 0.10  # type: ignore[operator]
    steering = result["steering"]
    assert isinstance(steering, dict) and steering["pathway_moves"] >= 1
    assert set(steering["segments_by_pathway"]) == {"e1", "e2"}
    assert result["stall_ratio"] is not None and result["stall_ratio"] < 0.01  # type: ignore[operator]
