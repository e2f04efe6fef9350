"""The --model report files and the latency histogram they summarise."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from edge360.replay import command
from edge360.replay.report import Histogram, SeriesPoint, write_report


def test_model_run_writes_every_report_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "--scale", "0.01", "--window", "6-12", "--report",
                              str(tmp_path), "--seed", "9"])
    assert command.run(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("views", "target_peak", "achieved_peak", "peak_hour", "server_peak", "requests",
                "errors", "scale", "speed", "window", "seed", "startup_p50_s", "startup_p95_s",
                "stall_ratio", "latency_p99_s", "errors_by_kind"):
        assert key in report
    assert report["server_peak"] is None and report["window"] == [6.0, 12.0]
    assert abs(report["target_peak"] - 600) <= 6           # the day's peak falls in this window
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    assert list(rows[0]) == ["time", "target", "achieved", "server"]
    assert float(rows[0]["time"]) == 6.0 and float(rows[-1]["time"]) == 12.0
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"https?://", page)    # opens without the internet
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_html_without_png_draws_its_own_svg(tmp_path: Path) -> None:
    from edge360.replay import report as report_module
    series = [SeriesPoint(time_h=i / 10, target=float(i), achieved=float(i), server=None)
              for i in range(20)]
    page = report_module._html({"views": 1}, series, None)
    assert "<svg" in page and "<polyline" in page
    write_report(tmp_path, {"views": 1}, series)
    assert (tmp_path / "report.html").exists()


def test_histogram_percentiles_within_a_bucket() -> None:
    h = Histogram()
    assert h.percentile(0.5) is None
    for i in range(1, 1001):
        h.add(i / 1000)               # 1 ms .. 1 s uniformly
    for q in (0.5, 0.95, 0.99):
        got = h.percentile(q)
        assert got is not None and abs(got - q) <= 0.06 * q
    other = Histogram()
    other.add(100.0)
    h.merge(other)
    top = h.percentile(1.0)
    assert h.total == 1001 and top is not None and top >= 95
