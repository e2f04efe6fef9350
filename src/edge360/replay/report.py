"""A replay's results: report.json, series.csv, report.png and a one-page offline report.html.

report.html embeds the picture (the PNG as base64, or an inline SVG of the same three panels when
matplotlib is missing) and carries no external reference, so it opens without the internet.

Also holds `Histogram`, the bounded log-bucket histogram the players record latencies into (fixed
size whatever the run's length, and mergeable across worker processes by adding counts).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge360.replay.plot import render_png
from edge360.replay.series import RenditionMix, SeriesPoint, clock, is_model
from edge360.replay.svg import render_svg

__all__ = ["Histogram", "RenditionMix", "SeriesPoint", "write_report"]

_MIN_S = 1e-4          # 0.1 ms: the first bucket's upper edge
_GROWTH = 1.05         # 5 % wide buckets: percentiles within 5 %
_INV_MIN_S = 1 / _MIN_S
_INV_LOG_GROWTH = 1 / math.log(_GROWTH)
_BUCKETS = 300         # up to ~0.1 ms × 1.05^300 ≈ 230 s; anything longer lands in the last bucket


@dataclass
class Histogram:
    """Counts of durations (seconds) in log-spaced buckets."""

    counts: list[int] = field(default_factory=lambda: [0] * _BUCKETS)

    def add(self, seconds: float) -> None:
        # (once per request in a replay: one log, with the bucket width's inverse precomputed)
        if seconds <= _MIN_S:
            i = 0
        else:
            i = min(int(math.log(seconds * _INV_MIN_S) * _INV_LOG_GROWTH) + 1, _BUCKETS - 1)
        self.counts[i] += 1

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-quantile (0 < q ≤ 1); None when empty."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return _MIN_S * _GROWTH ** i
        return _MIN_S * _GROWTH ** (_BUCKETS - 1)


def write_report(directory: Path, summary: dict[str, Any], series: list[SeriesPoint], *,
                 mix: RenditionMix | None = None,
                 day: Sequence[tuple[float, float]] | None = None) -> list[Path]:
    """Write every report file into `directory` (created if needed) and return their paths.

    `mix` is the rendition mix (its overall shares go into report.json as `rendition_mix`); `day`
    is the whole day's target curve (hours, viewers), drawn small with the window shaded."""
    directory.mkdir(parents=True, exist_ok=True)
    if mix is not None:
        summary["rendition_mix"] = mix.overall()
        summary["rendition_mix_source"] = "expected (model)" if mix.expected else mix.basis
    written = [directory / "report.json", directory / "series.csv"]
    written[0].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with written[1].open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["time", "target", "achieved", "server", "watching", "requests", "errors"])
        for p in series:
            out.writerow([f"{p.time_h:.5f}", f"{p.target:.2f}", _cell(p.achieved), _cell(p.server),
                          _cell(p.watching), "" if p.requests is None else p.requests,
                          "" if p.errors is None else p.errors])
    png = render_png(series, summary, mix, day)
    if png is None:
        print("replay: matplotlib is not installed (pip install 'edge360[plot]'): "
              "writing report.html with an inline SVG chart and no report.png", file=sys.stderr)
    else:
        (directory / "report.png").write_bytes(png)
        written.append(directory / "report.png")
    (directory / "report.html").write_text(_html(summary, series, png, mix))
    written.append(directory / "report.html")
    return written


def _cell(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and unit == "s":
        return f"{v * 1000:,.0f} ms" if v < 1 else f"{v:,.2f} s"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:,.4g}"
    return html.escape(str(v))


def _diff(value: Any, ref: Any, name: str = "target") -> str:
    if not isinstance(value, (int, float)) or not isinstance(ref, (int, float)) or not ref:
        return ""
    return f" ({(value - ref) / ref * 100:+.1f} % vs {name})"


def _headline(summary: dict[str, Any]) -> list[tuple[str, str]]:
    tp = summary.get("target_peak")
    errors = summary.get("errors_by_kind") or {}
    kinds = ", ".join(f"{html.escape(str(k))} {n:,}" for k, n in sorted(errors.items()))
    stall = summary.get("stall_ratio")
    server = summary.get("server_peak")
    srv = ("n/a (model only)" if is_model(summary) else "n/a (target has no /metrics)"
           ) if server is None else (_fmt(server) + _diff(server, tp)
                                     + _diff(server, summary.get("achieved_peak"), "achieved"))
    peak_hour = summary.get("peak_hour")
    rows = [
        ("views (simulated, in window)", _fmt(summary.get("views"))),
        ("target peak (model)", _fmt(tp)),
        ("achieved peak (replayer ground truth)",
         _fmt(summary.get("achieved_peak")) + _diff(summary.get("achieved_peak"), tp)),
        ("server-reported peak (/metrics)", srv),
        ("model peak hour", "n/a" if peak_hour is None
         else f"{clock(float(peak_hour))} after release"),
        ("requests", _fmt(summary.get("requests"))),
        ("errors", _fmt(summary.get("errors")) + (f" ({kinds})" if kinds else "")),
        ("start-up time p50 / p95", f"{_fmt(summary.get('startup_p50_s'), 's')} / "
                                    f"{_fmt(summary.get('startup_p95_s'), 's')}"),
        ("stall ratio", "n/a" if stall is None else f"{stall * 100:.3f} %"),
        *([("live playlist reloads / skips to the live edge",
            f"{_fmt(summary['playlist_reloads'])} / {_fmt(summary.get('live_skips'))}")]
          if summary.get("playlist_reloads") else []),
        ("request latency p99", _fmt(summary.get("latency_p99_s"), "s")),
    ]
    mix = summary.get("rendition_mix")
    if isinstance(mix, dict) and mix:
        rows.append(("rendition mix" + (" (expected)" if is_model(summary) else ""),
                     ", ".join(f"{html.escape(k)} {v * 100:.0f} %" for k, v in mix.items())))
    return rows


_PARAMETERS = ("target", "scale", "speed", "window", "seed", "shard", "workers", "loop",
               "idle_timeout", "model_views", "model_peak", "prime_amplitude", "mean_watch_s",
               "real_seconds")


def _html(summary: dict[str, Any], series: list[SeriesPoint], png: bytes | None,
          mix: RenditionMix | None = None) -> str:
    head = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _headline(summary))
    params = "".join(f"<tr><th>{k}</th><td>{html.escape(json.dumps(summary[k]))}</td></tr>"
                     for k in _PARAMETERS if k in summary)
    everything = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in sorted(summary.items()))
    if png is not None:
        chart = (f'<img alt="concurrent viewers, arrivals per minute and rendition mix over time" '
                 f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    else:
        chart = render_svg(series, summary, mix)
    mode = "model only, no network" if is_model(summary) else "live replay"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge360 replay report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1220px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ padding: 2px 12px; border-bottom: 1px solid #ddd; text-align: left; font-size: 14px; }}
th {{ font-weight: 600; }} img, svg {{ max-width: 100%; height: auto; }}
.cols {{ display: flex; gap: 2em; flex-wrap: wrap; }} h2 {{ font-size: 17px; margin: .6em 0; }}
</style></head><body>
<h1>edge360 replay <small>({mode})</small></h1>
<div class="cols"><div><h2>Headline</h2><table id="headline">{head}</table></div>
<div><h2>Run parameters</h2><table id="parameters">{params}</table></div></div>
{chart}
<details><summary>all figures (report.json)</summary><table>{everything}</table></details>
</body></html>
"""
