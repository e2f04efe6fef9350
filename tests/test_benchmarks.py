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

from tests.fixtures.tools import require_tool

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


@pytest.mark.parametrize("group", ["sessions", "sendpath"])
def test_only_edge360_groups_quick_end_to_end(tmp_path: Path, group: str) -> None:
    """`--only GROUP --quick` writes one edge360-only document and renders it (no timing
    assertion: only that every figure the issue asks for is there with a value)."""
    results_dir = tmp_path / "results"
    markdown = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--only", group, "--quick",
         "--results-dir", str(results_dir), "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = _result_files(results_dir)
    assert [f.name[10:] for f in files] == [f"-{group}.json"]
    doc = json.loads(files[0].read_text())
    _check_edge360_only(doc, files[0].name)
    assert all(f["value"] is not None for f in doc["figures"])
    assert markdown.read_text() == render_results(results_dir)
    _check_edge360_only_rows(results_dir, markdown.read_text())


def _quick(tmp_path: Path, *args: str) -> tuple[Path, list[Path]]:
    """`python -m benchmarks.run --quick ARGS` into tmp_path: the results files it wrote, after
    checking it exited 0 and rendered exactly what the generator makes of them."""
    results_dir = tmp_path / "results"
    markdown = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", *args,
         "--results-dir", str(results_dir), "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-2000:]
    assert markdown.read_text() == render_results(results_dir)
    return markdown, _result_files(results_dir)


def _expected_rows(groups: list[str], origin: str) -> set[tuple[str, str]]:
    """(row, metric) every asked group must record, with edges in front of `origin`."""
    edge, https = f"edge over {origin} origin", f"https edge over {origin} origin"
    rate, size = ("req_per_s", "p99_ms"), ("gb_per_cpu_s", "gb_per_pair_cpu_s", "gb_per_s",
                                           "p99_ms")
    rows: dict[str, list[tuple[str, tuple[str, ...]]]] = {
        "origin": [("origin: master playlist 218 B", rate), ("origin: small .ts 218 B", rate),
                   ("origin: 8 MiB segment", size), ("origin: 1 MiB ranges of 64 MiB", size)],
        "edge": [(f"{edge}: master playlist 218 B, 4 h lifetime", rate),
                 (f"{edge}: live media playlist, 2 s lifetime + stale-while-revalidate", rate),
                 (f"{edge}: small .ts 218 B", rate), (f"{edge}: 8 MiB segment", size),
                 (f"{edge}: 1 MiB ranges of 64 MiB", size),
                 (f"{edge}, edge360 from its disk tier: 8 MiB segment", size),
                 (f"{edge}, edge360 from its disk tier: 1 MiB ranges of 64 MiB", size),
                 (f"{edge}, edge360 from its disk tier: 1.5 MiB segment", size)],
        "herd": [(f"{edge}: cold-miss herd", ("ttfb_p50_ms", "ttfb_p99_ms", "ttfb_max_ms",
                                              "upstream_fetches"))],
        "https": [(f"{https}: small .ts 218 B", rate), (f"{https}: 8 MiB segment", size),
                  (f"{https}: full TLS handshakes", ("handshakes_per_s",
                                                     "cpu_us_per_handshake"))],
    }
    return {(name, m) for g in groups for name, metrics in rows[g] for m in metrics}


def _check_comparison(doc: dict[str, Any], name: str, groups: list[str], origin: str) -> None:
    """Every figure the groups name is in the file, measured on both servers, nothing skipped;
    the live playlist's lifetime and the TLS handshake are what the rows say they are."""
    assert doc["mode"] == "quick"
    assert doc["not_run"] == [], doc["not_run"]
    _check_pairs(doc, name)
    summary = {(r["workload"], r["metric"]) for r in doc["summary"]}
    assert summary == _expected_rows(groups, origin), name
    assert all(r["value"] is not None for r in doc["runs"]), name
    for run in doc["runs"]:
        if run["workload"].endswith("stale-while-revalidate"):
            # both origins gave it the 2-second lifetime; edge360 sends it private (rewritten)
            assert run["check"]["cache_control"].endswith("max-age=2"), run["check"]
        if run["metric"] == "handshakes_per_s":
            assert run["check"]["tls"]["protocol"] == "TLSv1.3"
            assert run["check"]["tls"]["signature"] == "ECDSA"
            assert run["handshakes"] > 0 and run["bytes_per_connection"] > 0
        if run["metric"] == "upstream_fetches":
            assert run["value"] >= 1  # counted at the origin, for both edges


def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """One plain run records every comparison group (edges in front of the nginx origin here;
    the edge360 origin in the --only test below), each figure on edge360 and on nginx."""
    for tool in ("nginx", "wrk", "openssl"):
        require_tool(tool)
    markdown, files = _quick(tmp_path, "--edge-origins", "nginx")
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert "group" not in doc and doc["groups"] == ["origin", "edge", "herd", "https"]
    _check_comparison(doc, files[0].name, doc["groups"], "nginx")
    text = markdown.read_text()
    assert "edge over nginx origin: live media playlist" in text
    assert "proxy_cache_use_stale updating" in text  # said in "What was requested"
    assert "Quick smoke run" in text


def test_only_comparison_groups_end_to_end(tmp_path: Path) -> None:
    """`--only herd` writes the group's own comparison file, edges in front of the edge360
    origin (the herd's upstream fetches counted from its metrics); the plain run above covers
    every group, https included."""
    for tool in ("nginx", "wrk", "openssl"):
        require_tool(tool)
    markdown, files = _quick(tmp_path, "--only", "herd", "--edge-origins", "edge360")
    assert [f.name[10:] for f in files] == ["-herd.json"]
    for path, group in zip(files, ("herd",), strict=True):
        doc = json.loads(path.read_text())
        assert doc["group"] == group and is_comparison(doc)
        _check_comparison(doc, path.name, [group], "edge360")
        assert f"(`results/{path.name}`)" in markdown.read_text()


def test_headline_bounds_hold_for_the_runs_the_command_makes() -> None:
    """The headline steps `benchmarks.run` asks for, quick or full, are within bench_headline's
    bounds (a quick step of 30 s gets a join it can hold), and a join too long for the step is
    refused before anything runs."""
    from benchmarks import run
    for argv in (["--only", "headline"], ["--quick", "--only", "headline"],
                 ["--only", "headline", "--headline-seconds", "1200", "--headline-ramp", "400"]):
        run.parse_args(argv)  # no refusal
    with pytest.raises(SystemExit) as refused:
        run.parse_args(["--quick", "--only", "headline", "--headline-ramp", "20"])
    assert refused.value.code == 2


def test_run_refuses_bad_groups_and_origins() -> None:
    """A wrong --only group or --edge-origins value: exit 2 with one line, before any server."""
    for args in (["--only", "edges"], ["--edge-origins", "apache"],
                 ["--edge-origins", "nginx,nginx"], ["--handshake-clients", "0"],
                 ["--headline-seconds", "5000"], ["--headline-ramp", "200"]):
        out = subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and "error:" in out.stderr, args


def test_nginx_configs_are_valid(tmp_path: Path) -> None:
    """The reference's configurations, as the benchmark writes them, pass `nginx -t`: the
    origin with its lifetimes, the proxy cache with its live-playlist location, over HTTPS."""
    from benchmarks import nginxref, tlsbench

    nginx = require_tool("nginx")
    require_tool("openssl")
    cert = tlsbench.make_cert(tmp_path / "tls")
    for role, tls in (("origin", None), ("edge", None), ("edge", cert)):
        work = tmp_path / f"{role}-{'tls' if tls else 'plain'}"
        work.mkdir()
        text = nginxref.nginx_conf(role, workdir=work, media_root=tmp_path, listen="127.0.0.1:9",
                                   upstream="http://127.0.0.1:9", tls=tls)
        assert "@{" not in text
        (work / "nginx.conf").write_text(text)
        out = subprocess.run([nginx, "-t", "-p", str(work), "-c", str(work / "nginx.conf"),
                              "-e", str(work / "error.log"), "-g", "daemon off;"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        if role == "edge":
            assert "proxy_cache_background_update on;" in text
            assert ("listen 127.0.0.1:9 ssl;" in text) == (tls is not None)


def test_client_bound_figures_are_noted() -> None:
    """A run whose client core was full gets a note naming it; one that was not, none."""
    from benchmarks.compare import client_notes

    runs = [{"workload": "w", "server": "nginx", "client_cpu_s": 3.9, "duration_s": 4.0},
            {"workload": "w", "server": "edge360", "client_cpu_s": 1.0, "duration_s": 4.0}]
    notes = client_notes(runs)
    assert len(notes) == 1 and notes[0].startswith("w, nginx:")


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


def test_headline_names_the_replayer_when_it_fell_behind_and_when_errors_came(
        tmp_path: Path) -> None:
    """A step whose replayer lost its pace names that as the limit (what it measured then is
    its own limit), and the errors figure says whether they came while the viewers joined."""
    from benchmarks import bench_headline, only

    step = {**_headline_step(60_000, False), "pacing_lost": True,
            "pacing_note": "players woke up to 9.1 s late (worst)",
            "edge_cpu_busy": 0.8, "replayer_cpu_busy": 1.01, "edge_cpu_busy_joining": 0.73,
            "replayer_cpu_busy_joining": 0.93, "errors_while_joining": 0,
            "errors_after_joining": 1, "first_error_s": 147.2,
            "tcp_counters": {"ListenOverflows": 0, "TCPSynRetrans": 0, "RetransSegs": 1}}
    named = bench_headline.limit(step)
    assert "replayer pacing (players woke up to 9.1 s late (worst))" in named
    assert "replayer core (101% busy)" in named
    when = only._when(step)
    assert "while the viewers joined: edge 73%, replayer 93% of a core" in when
    assert "0 errors while joining (first at 147.2 s), 1 after" in when
    assert "{'RetransSegs': 1}" in when       # only the counters that moved
    # series.csv's cumulative errors split at the end of the joining
    report = tmp_path / "report"
    report.mkdir()
    (report / "series.csv").write_text(
        "time,target,achieved,server,watching,requests,errors\n"
        "9.7,1,1,1,1,10,0\n9.71,1,1,1,1,20,2\n9.72,1,1,1,1,30,5\n")
    samples = [{"t": t, "edge_cpu": t / 2, "rep_cpu": t} for t in (0.0, 30.0, 60.0)]
    phases = bench_headline._phases(samples, 0.0, 40.0, report)
    assert phases["errors_while_joining"] == 2 and phases["errors_after_joining"] == 3
    assert phases["first_error_s"] == 36.0
    assert phases["edge_cpu_busy_joining"] == 0.5 and phases["replayer_cpu_busy_joining"] == 1.0


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


def test_headline_reads_the_views_the_edge_counted(tmp_path: Path) -> None:
    """A step reports the server's views beside the viewers who fetched media: one viewer who
    plays a segment is one view at a real edge, and the warm-up (as the edge's peer) is none."""
    import re

    from benchmarks import bench_headline, harness

    pin = harness.Pinning((), (), "not pinned")
    bench_headline.make_title(tmp_path / "media")
    origin = harness.start_edge360("origin", ["--media", str(tmp_path / "media")], pin, tmp_path)
    try:
        edge = harness.start_edge360(
            "edge", ["--upstream", origin.base, "--config",
                     str(bench_headline._edge_config(tmp_path, 1))], pin, tmp_path)
        try:
            bench_headline.warm(edge.base)
            assert bench_headline._server_views(edge.base) == 0
            _, _, master = harness.http_get(f"{edge.base}/{bench_headline.TITLE}/master.m3u8")
            variant = next(ln for ln in master.decode().splitlines() if ln and ln[0] != "#")
            media_url = f"{edge.base}/{bench_headline.TITLE}/{variant}"
            _, _, media = harness.http_get(media_url)
            segment = next(ln for ln in media.decode().splitlines() if ln and ln[0] != "#")
            assert re.search(r"sid=", segment)
            code, _, _ = harness.http_get(media_url.rsplit("/", 1)[0] + "/" + segment)
            assert code == 200
            assert bench_headline._server_views(edge.base) == 1
        finally:
            edge.stop()
    finally:
        origin.stop()
    assert bench_headline._server_views("http://127.0.0.1:9") is None  # nothing listens there
