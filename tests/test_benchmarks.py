"""The benchmarks' records: RESULTS.md is generated, never hand-edited; every comparison pairs
edge360 with nginx from the same run; and the harness runs end to end (a --quick smoke run against
a real edge360 and a real nginx on 127.0.0.1, written into tmp_path). Structure only: no timing
assertion anywhere (DESIGN rule 10: a performance claim is a recorded benchmark, not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks.results import RESULTS_DIR, RESULTS_MD, SERVERS, render_results

from tests.tools import require_tool

REPO = Path(__file__).resolve().parent.parent


def _result_files(results_dir: Path) -> list[Path]:
    return sorted(results_dir.glob("*.json"))


def _check_pairs(doc: dict[str, Any], name: str) -> None:
    """Every summary row has both medians, from runs of both servers inside this same file."""
    measured: dict[tuple[str, str], set[str]] = {}
    for run in doc["runs"]:
        assert run["server"] in SERVERS, (name, run)
        assert run["role"] in ("origin", "edge"), (name, run)
        if run.get("value") is not None:
            measured.setdefault((run["workload"], run["metric"]), set()).add(run["server"])
    for row in doc["summary"]:
        key = (row["workload"], row["metric"])
        assert isinstance(row["edge360"], int | float), (name, row)
        assert isinstance(row["nginx"], int | float), (name, row)
        assert measured.get(key) == set(SERVERS), f"{name}: {key} is not measured on both"
        if row["nginx"]:
            assert row["ratio"] == pytest.approx(row["edge360"] / row["nginx"]), (name, row)
    for entry in doc.get("not_run", []):
        assert entry["reason"], (name, entry)


def test_results_md_is_generated() -> None:
    assert RESULTS_MD.read_text() == render_results(RESULTS_DIR), (
        "benchmarks/RESULTS.md is generated: run `.venv/bin/python -m benchmarks.run --render`")


def test_results_files_pair_edge360_with_nginx() -> None:
    files = _result_files(RESULTS_DIR)
    for path in files:
        doc = json.loads(path.read_text())
        for key in ("date", "machine", "runs", "summary", "command"):
            assert key in doc, f"{path.name} lacks {key}"
        for key in ("cpu_model", "cores", "kernel", "python", "nginx"):
            assert key in doc["machine"], f"{path.name}: machine lacks {key}"
        _check_pairs(doc, path.name)


def test_quick_run_end_to_end(tmp_path: Path) -> None:
    require_tool("nginx")
    require_tool("wrk")
    results_dir = tmp_path / "results"
    markdown = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--results-dir", str(results_dir),
         "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    files = _result_files(results_dir)
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["mode"] == "quick"
    assert {r["workload"] for r in doc["runs"]} >= {"origin: master playlist 218 B",
                                                    "origin: small .ts 218 B"}
    assert {(r["server"], r["role"]) for r in doc["runs"]} >= {("edge360", "origin"),
                                                               ("nginx", "origin")}
    assert {r["metric"] for r in doc["summary"]} >= {"req_per_s"}
    _check_pairs(doc, files[0].name)
    # every requested edge workload is either measured on both servers or says why not
    edge_rows = {r["workload"] for r in doc["summary"] if r["workload"].startswith("edge:")}
    edge_skipped = {n["workload"] for n in doc["not_run"] if n["workload"].startswith("edge:")}
    assert edge_rows or edge_skipped
    assert markdown.read_text() == render_results(results_dir)
    assert "origin: small .ts 218 B" in markdown.read_text()
