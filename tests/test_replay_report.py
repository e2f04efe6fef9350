"""The --model report files, the picture (PNG and its SVG fallback), the offline HTML page, and
the latency histogram they summarise."""

from __future__ import annotations

import argparse
import builtins
import csv
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from edge360.replay import command, plot
from edge360.replay.player import HEADROOM, LINKS
from edge360.replay.report import Histogram, SeriesPoint, write_report
from edge360.replay.series import expected_mix, measured_mix


def _model(tmp_path: Path, *argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--model", "--report", str(tmp_path), *argv])) == 0
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    return report


def _no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_model_run_writes_every_report_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "--scale", "0.01", "--window", "6-12", "--report",
                              str(tmp_path), "--seed", "9"])
    assert command.run(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("views", "target_peak", "achieved_peak", "peak_hour", "server_peak", "requests",
                "errors", "scale", "speed", "window", "seed", "startup_p50_s", "startup_p95_s",
                "stall_ratio", "latency_p99_s", "errors_by_kind", "watching_peak",
                "player_profile"):
        assert key in report
    assert report["server_peak"] is None and report["window"] == [6.0, 12.0]
    assert abs(report["target_peak"] - 600) <= 6           # the day's peak falls in this window
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    assert list(rows[0]) == ["time", "target", "achieved", "server", "watching", "requests",
                             "errors"]
    assert rows[0]["requests"] == rows[0]["errors"] == ""   # a model run sends no request
    assert float(rows[0]["time"]) == 6.0 and float(rows[-1]["time"]) == 12.0
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"https?://", page)    # opens without the internet
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_the_day_does_not_empty_at_its_end(tmp_path: Path) -> None:
    _model(tmp_path, "--scale", "0.01", "--seed", "3")
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    last = rows[-1]
    assert float(last["time"]) == 24.0 and float(last["target"]) > 100
    # viewers cut at the day's end are still watching then: the last point is the curve's
    assert abs(float(last["achieved"]) - float(rows[-2]["achieved"])) <= 0.1 * float(
        last["target"])
    assert abs(float(last["achieved"]) - float(last["target"])) <= 0.15 * float(last["target"])


def test_png_is_the_three_panel_figure_of_the_expected_size(tmp_path: Path) -> None:
    report = _model(tmp_path, "--scale", "0.01", "--window", "8-11")
    data = (tmp_path / "report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (plot.WIDTH_PX, plot.HEIGHT_PX) == (1200, 900)
    assert len(data) > 30_000                       # three drawn panels, not an empty canvas
    # the model's expected mix: the link distribution through the players' 80 % rule
    assert report["rendition_mix"] == {"2160p ~16 Mbit/s": 0.25, "1080p ~6 Mbit/s": 0.35,
                                       "720p ~3 Mbit/s": 0.25, "≤540p ~1 Mbit/s": 0.15}
    assert report["rendition_mix_source"] == "expected (model)"


def _headline_numbers(page: str) -> str:
    return page.split('id="headline"', 1)[1].split("</table>", 1)[0]


def test_html_is_offline_and_carries_the_report_figures(tmp_path: Path) -> None:
    summary = {"views": 123456, "target_peak": 6000.0, "achieved_peak": 5880, "peak_hour": 9.75,
               "server_peak": 6120.0, "requests": 987654, "errors": 7,
               "errors_by_kind": {"http_503": 5, "timeout": 2}, "startup_p50_s": 0.25,
               "startup_p95_s": 1.5, "stall_ratio": 0.0123, "latency_p99_s": 0.048,
               "target": "http://edge.example:8080/t/master.m3u8", "scale": 0.1, "speed": 10.0,
               "window": [9.0, 10.5], "seed": 4}
    series = [SeriesPoint(time_h=9 + i / 40, target=6000.0 - abs(i - 30) * 10,
                          achieved=5880.0 - abs(i - 30) * 10, server=6120.0 - abs(i - 30) * 10,
                          arrivals=2.0) for i in range(61)]
    mix = measured_mix({(9.2, "360p 0.8 Mbit/s"): 30.0, (9.2, "1080p 5.0 Mbit/s"): 90.0},
                       {"360p 0.8 Mbit/s": 8e5, "1080p 5.0 Mbit/s": 5e6}, "segment time")
    write_report(tmp_path, summary, series, mix=mix,
                 day=[(h / 4, 1000.0 * h) for h in range(97)])
    page = (tmp_path / "report.html").read_text()
    assert page.count("http://edge.example:8080/t/master.m3u8") == 2   # parameters and json
    assert not re.search(r"https?://", page.replace("http://edge.example:8080/t/master.m3u8", ""))
    head = _headline_numbers(page)
    for figure in ("123,456", "6,000", "5,880 (-2.0 % vs target)", "6,120 (+2.0 % vs target)",
                   "+4.1 % vs achieved", "9:45 after release", "987,654",
                   "7 (http_503 5, timeout 2)",
                   "250 ms / 1.50 s", "1.230 %", "48 ms", "1080p 5.0 Mbit/s 75 %"):
        assert figure in head, figure
    params = page.split('id="parameters"', 1)[1].split("</table>", 1)[0]
    assert "[9.0, 10.5]" in params and "<th>speed</th><td>10.0</td>" in params
    assert "data:image/png;base64," in page and "<svg" not in page
    assert json.loads((tmp_path / "report.json").read_text())["rendition_mix"] == {
        "360p 0.8 Mbit/s": 0.25, "1080p 5.0 Mbit/s": 0.75}


def test_without_matplotlib_the_html_draws_the_three_panels_in_svg(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _no_matplotlib(monkeypatch)
    report = _model(tmp_path, "--scale", "0.01", "--window", "6-12")
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "report.png").exists()
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"https?://", page) and "data:image" not in page
    panels = re.findall(r'<g class="panel" id="panel-(\w+)">', page)
    assert panels == ["concurrency", "arrivals", "mix"]
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    concurrency = svg.split('id="panel-concurrency"')[1].split('id="panel-arrivals"')[0]
    assert concurrency.count("<polyline") == 2 and concurrency.count('class="peak"') == 2
    assert f"peak {report['target_peak']:,.0f} at" in concurrency
    assert "server n/a (model only)" in svg and "None" not in svg
    arrivals = svg.split('id="panel-arrivals"')[1].split('id="panel-mix"')[0]
    assert arrivals.count("<polyline") == 1
    mix = svg.split('id="panel-mix"')[1]
    assert mix.count("<polygon") == 4 and "expected" in mix
    assert "6:00" in svg and "12:00" in svg and "time after release (h:mm)" in svg


def test_expected_and_measured_mix_shares() -> None:
    mix = expected_mix(LINKS, HEADROOM, [0.0, 12.0, 24.0])
    assert mix.expected and len(mix.shares) == 3
    assert all(abs(sum(row) - 1) < 1e-9 for row in mix.shares)
    assert mix.labels[0].startswith("≤540p") and mix.labels[-1].startswith("2160p")
    got = measured_mix({(1.0, "hi"): 3.0, (1.0, "lo"): 1.0, (2.0, "lo"): 2.0},
                       {"hi": 5e6, "lo": 8e5}, "segment time")
    assert got is not None and got.labels == ("lo", "hi") and not got.expected
    assert got.shares == ((0.25, 0.75), (1.0, 0.0)) and got.times_h == (1.0, 2.0)
    assert measured_mix({}, {}, "x") is None


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


def test_live_mix_is_what_the_players_fetched(tmp_path: Path) -> None:
    from tests.fixtures.hls_server import ServerLog, ThreadServer, build_app
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=ServerLog())) as srv:
        command.run(parser.parse_args([
            "--target", srv.url, "--scale", "0.005", "--speed", "30", "--window", "9.5-9.55",
            "--loop", "--seed", "5", "--report", str(tmp_path)]))
    report = json.loads((tmp_path / "report.json").read_text())
    mix = report["rendition_mix"]
    # links of 25 and 8 Mbit/s (60 % of viewers) fit the 5 Mbit/s rendition at 80 % headroom;
    # the mix is a share of segment time, not of viewers: links change mid-visit and buffers
    # fill at link speed, so it reads 0.54 on a quiet machine and 0.50 with the suite running
    assert set(mix) == {"360p 0.8 Mbit/s", "1080p 5.0 Mbit/s"}
    assert abs(mix["1080p 5.0 Mbit/s"] - 0.6) <= 0.15 and abs(sum(mix.values()) - 1) < 0.01
    assert report["rendition_mix_source"].startswith("share of segment time")
    assert "(model only)" not in (tmp_path / "report.html").read_text()
