"""The benchmarks' records: RESULTS.md is generated, never hand-edited; every comparison pairs
edge360 with nginx from the same run; and the harness runs end to end (a --quick smoke run against
a real edge360 and a real nginx on 127.0.0.1, written into tmp_path). Structure only: no timing
assertion anywhere (docs/DEVELOPING.md, "Conventions": a performance claim is a recorded
benchmark, not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks.results import (
    EDGE360_ONLY,
    RESULTS_DIR,
    RESULTS_MD,
    SERVERS,
    edge360_only_doc,
    figure,
    is_comparison,
    render_results,
)

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


def _check_edge360_only(doc: dict[str, Any], name: str) -> None:
    """An edge360-only document holds figures and nothing that could pass for a comparison."""
    assert doc["runs"] == [] and doc["summary"] == [], name
    assert doc["figures"], f"{name}: no figures"
    for f in doc["figures"]:
        for key in ("group", "figure", "unit"):
            assert f.get(key), (name, f)
        assert f["value"] is None or isinstance(f["value"], int | float), (name, f)


def test_results_files_pair_edge360_with_nginx() -> None:
    files = _result_files(RESULTS_DIR)
    for path in files:
        doc = json.loads(path.read_text())
        for key in ("date", "machine", "runs", "summary", "command"):
            assert key in doc, f"{path.name} lacks {key}"
        machine_keys = ("cpu_model", "cores", "kernel", "python")
        if is_comparison(doc):
            machine_keys += ("nginx",)
        for key in machine_keys:
            assert key in doc["machine"], f"{path.name}: machine lacks {key}"
        _check_pairs(doc, path.name)
        if doc.get("kind") == EDGE360_ONLY:
            _check_edge360_only(doc, path.name)


def _edge360_only_rows(markdown: str) -> list[str]:
    section = markdown.split("\n## edge360-only figures\n", 1)
    assert len(section) == 2, "RESULTS.md has no edge360-only section"
    return [line for line in section[1].splitlines()
            if line.startswith("| ") and not line.startswith("| group |")]


def _check_edge360_only_rows(results_dir: Path, markdown: str) -> None:
    """Every edge360-only figure of every file is one row naming its command, date and file."""
    rows = _edge360_only_rows(markdown)
    expected = 0
    for path in _result_files(results_dir):
        doc = json.loads(path.read_text())
        for f in doc.get("figures", []):
            expected += 1
            mine = [r for r in rows if f"`results/{path.name}` |" in r
                    and f" {f['figure'].replace('|', chr(92) + '|')} |" in r]
            assert len(mine) == 1, f"{path.name}: {f['figure']} is not one row"
            assert f"`{doc['command']}`" in mine[0], (path.name, mine[0])
            assert doc["date"] in mine[0], (path.name, mine[0])
    assert len(rows) == expected, "a row of the edge360-only section comes from no file"
    # and no edge360-only figure appears in a comparison table
    comparisons = markdown.split("\n## edge360-only figures\n", 1)[0]
    for path in _result_files(results_dir):
        doc = json.loads(path.read_text())
        if doc.get("kind") == EDGE360_ONLY:
            assert f"(`results/{path.name}`)" not in comparisons, path.name


def test_results_md_edge360_only_rows_name_command_and_source() -> None:
    _check_edge360_only_rows(RESULTS_DIR, RESULTS_MD.read_text())


def test_render_keeps_edge360_only_figures_apart(tmp_path: Path) -> None:
    machine = {"cpu_model": "test", "cores": 2, "kernel": "k", "python": "3"}
    doc = edge360_only_doc(
        "sessions", date="2030-01-02T03:04:05Z", command="cmd --only sessions",
        machine=machine, settings={}, notes=["a note"], raw={},
        figures=[figure("sessions", "memory | per session", 250.0, "bytes", "<= 300", "how"),
                 figure("sessions", "touches/s", None, "touches/s")])
    (tmp_path / "2030-01-02-sessions.json").write_text(json.dumps(doc))
    comparison = {"date": "2030-01-01T00:00:00Z", "command": "cmd", "machine": machine,
                  "runs": [{"workload": "w", "metric": "req_per_s", "server": s,
                            "role": "origin", "value": 2.0} for s in SERVERS],
                  "summary": [{"workload": "w", "metric": "req_per_s", "edge360": 2.0,
                               "nginx": 2.0, "ratio": 1.0}]}
    (tmp_path / "2030-01-01.json").write_text(json.dumps(comparison))
    markdown = render_results(tmp_path)
    _check_edge360_only_rows(tmp_path, markdown)
    assert len(_edge360_only_rows(markdown)) == 2
    assert "| w | requests/s | 2 | 2 | 1.00 | higher |" in markdown
    assert "memory \\| per session" in markdown


def test_only_sessions_quick_end_to_end(tmp_path: Path) -> None:
    """`--only sessions --quick` writes one edge360-only document and renders it (no timing
    assertion: only that every figure the issue asks for is there with a value)."""
    results_dir = tmp_path / "results"
    markdown = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--only", "sessions", "--quick",
         "--results-dir", str(results_dir), "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = _result_files(results_dir)
    assert [f.name[10:] for f in files] == ["-sessions.json"]
    doc = json.loads(files[0].read_text())
    _check_edge360_only(doc, files[0].name)
    assert all(f["value"] is not None for f in doc["figures"])
    assert markdown.read_text() == render_results(results_dir)
    _check_edge360_only_rows(results_dir, markdown.read_text())


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


def _headline_step(viewers: int, clean: bool) -> dict[str, Any]:
    """A step record shaped as bench_headline writes it (values are placeholders, not claims)."""
    return {
        "viewers": viewers, "scale": viewers / 60_000, "window": "9.7-9.8", "target_peak": 1.0,
        "achieved_peak": 1, "server_peak": 1.0, "server_vs_truth_pct": 0.0, "requests": 1,
        "errors": 0 if clean else 1, "errors_by_kind": {} if clean else {"timeout": 1},
        "stall_ratio": 0.0, "latency_p99_s": 0.001, "expected_req_per_s": viewers / 6,
        "steady_req_per_s": 1.0, "edge_cpu_busy": 0.1, "edge_cpu_us_per_request": 100.0,
        "replayer_cpu_busy": 0.1, "replayer_cpu_us_per_request": 300.0,
        "edge_rss_max_bytes": 2**20, "replayer_rss_max_bytes": 2**20, "edge_fds_max": 10,
        "replayer_fds_max": 10, "clean": clean, "why_not_clean": "" if clean else "1 errors",
    }


def test_headline_group_renders_every_step_and_capacity(tmp_path: Path) -> None:
    """The headline group: registered in --only, one set of figures per step plus the largest
    clean step and both per-core capacities, rendered as edge360-only rows (structure only)."""
    from benchmarks import only

    assert "headline" in only.GROUPS
    data = {"pinning": "p", "segment_bytes": 376, "segments": 20, "renditions": ["a", "b"],
            "window": "9.7-9.8", "step_seconds": 100, "connections": 512,
            "steps": [_headline_step(2000, True), _headline_step(4000, False)],
            "largest_clean": 2000, "stopped_by": "4000 viewers: 1 errors"}
    figs, notes = only.headline_figures(data)
    names = [f["figure"] for f in figs]
    for n in ("2,000 viewers", "4,000 viewers"):
        assert any(name.startswith(f"{n}: server peak vs replayer truth") for name in names)
        assert any(name.startswith(f"{n}: edge CPU") for name in names)
        assert any(name.startswith(f"{n}: replayer CPU") for name in names)
    assert "edge capacity per core at 6 s pacing" in names
    assert "replayer capacity per core at 6 s pacing" in names
    doc = edge360_only_doc("headline", date="2030-01-02T03:04:05Z", command="cmd --only headline",
                           machine={"cpu_model": "x", "cores": 2, "kernel": "k", "python": "3"},
                           figures=figs, settings={}, notes=notes, raw=data)
    _check_edge360_only(doc, "headline")
    (tmp_path / "2030-01-02-headline.json").write_text(json.dumps(doc))
    _check_edge360_only_rows(tmp_path, render_results(tmp_path))


def test_headline_title_playlists_stay_readable_by_the_replayer(tmp_path: Path) -> None:
    """The headline title's playlists, rewritten with a sid, stay under the size the servers
    gzip (the replayer reads playlists without decompressing)."""
    from benchmarks import bench_headline

    bench_headline.make_title(tmp_path)
    sid = "?sid=" + "x" * 16
    for p in [p for p in bench_headline._paths() if p.endswith(".m3u8")]:
        text = (tmp_path / p.lstrip("/")).read_text()
        rewritten = "".join(ln + (sid if ln and not ln.startswith("#") else "") + "\n"
                            for ln in text.splitlines())
        assert len(rewritten.encode()) < bench_headline.GZIP_MIN, p
