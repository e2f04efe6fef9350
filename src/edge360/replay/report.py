"""Writing a replay's results: report.json, series.csv, a PNG plot and a self-contained report.html.

Also holds `Histogram`, the bounded log-bucket histogram the players record latencies into (fixed
size whatever the run's length, and mergeable across worker processes by adding counts).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MIN_S = 1e-4          # 0.1 ms: the first bucket's upper edge
_GROWTH = 1.05         # 5 % wide buckets: percentiles within 5 %
_BUCKETS = 300         # up to ~0.1 ms × 1.05^300 ≈ 230 s; anything longer lands in the last bucket


@dataclass
class Histogram:
    """Counts of durations (seconds) in log-spaced buckets."""

    counts: list[int] = field(default_factory=lambda: [0] * _BUCKETS)

    def add(self, seconds: float) -> None:
        if seconds <= _MIN_S:
            i = 0
        else:
            i = min(int(math.log(seconds / _MIN_S) / math.log(_GROWTH)) + 1, _BUCKETS - 1)
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


@dataclass(frozen=True)
class SeriesPoint:
    """One row of series.csv: hours of the day, the three concurrencies, arrivals per second."""

    time_h: float
    target: float
    achieved: float | None
    server: float | None
    arrivals: float | None = None


def write_report(directory: Path, summary: dict[str, Any], series: list[SeriesPoint]) -> list[Path]:
    """Write every report file into `directory` (created if needed) and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "series.csv"]
    written[0].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with written[1].open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["time", "target", "achieved", "server"])
        for p in series:
            out.writerow([f"{p.time_h:.5f}", f"{p.target:.2f}", _cell(p.achieved), _cell(p.server)])
    png = _plot_png(series, summary)
    if png is None:
        print("replay: matplotlib is not installed (pip install 'edge360[plot]'): "
              "writing report.html with an inline SVG chart and no report.png", file=sys.stderr)
    else:
        (directory / "report.png").write_bytes(png)
        written.append(directory / "report.png")
    (directory / "report.html").write_text(_html(summary, series, png))
    written.append(directory / "report.html")
    return written


def _cell(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _plot_png(series: list[SeriesPoint], summary: dict[str, Any]) -> bytes | None:
    try:
        import matplotlib
        matplotlib.use("Agg")       # no display: render to memory only
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    hours = [p.time_h for p in series]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    ax.plot(hours, [p.target for p in series], label="target (model)", color="#1f77b4")
    for name, color in (("achieved", "#2ca02c"), ("server", "#d62728")):
        pts = [(p.time_h, getattr(p, name)) for p in series if getattr(p, name) is not None]
        if pts:
            ax.plot([a for a, _ in pts], [b for _, b in pts], label=f"{name}", color=color)
    ax.set_xlabel("hours after release")
    ax.set_ylabel("concurrent viewers")
    arr = [(p.time_h, p.arrivals) for p in series if p.arrivals is not None]
    if arr:
        ax2 = ax.twinx()
        ax2.plot([a for a, _ in arr], [b for _, b in arr], color="#999999", lw=0.8,
                 ls="--", label="arrivals/s")
        ax2.set_ylabel("arrivals per second")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(f"edge360 replay: target peak {summary.get('target_peak')}, "
                 f"achieved {summary.get('achieved_peak')}, server {summary.get('server_peak')}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _svg(series: list[SeriesPoint]) -> str:
    """A dependency-free line chart of the three concurrency series."""
    w, h, pad = 900, 320, 40
    if not series:
        return "<p>no data</p>"
    t0, t1 = series[0].time_h, max(series[-1].time_h, series[0].time_h + 1e-9)
    values = [v for p in series for v in (p.target, p.achieved, p.server) if v is not None]
    top = max(max(values, default=1.0), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}"><rect width="{w}" height="{h}" fill="#fff"/>']
    for name, color in (("target", "#1f77b4"), ("achieved", "#2ca02c"), ("server", "#d62728")):
        pts = [(p.time_h, getattr(p, name)) for p in series if getattr(p, name) is not None]
        if not pts:
            continue
        coords = " ".join(f"{pad + (t - t0) / (t1 - t0) * (w - 2 * pad):.1f},"
                          f"{h - pad - v / top * (h - 2 * pad):.1f}" for t, v in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                     f'points="{coords}"><title>{name}</title></polyline>')
    parts.append(f'<text x="{pad}" y="{pad - 10}" font-size="12">max {top:,.0f}</text>'
                 f'<text x="{pad}" y="{h - 10}" font-size="12">{t0:.2f} h</text>'
                 f'<text x="{w - pad - 60}" y="{h - 10}" font-size="12">{t1:.2f} h</text></svg>')
    return "".join(parts)


def _html(summary: dict[str, Any], series: list[SeriesPoint], png: bytes | None) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in sorted(summary.items()))
    if png is not None:
        chart = (f'<img alt="concurrency over the day" '
                 f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    else:
        chart = _svg(series)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge360 replay report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 10px; border-bottom: 1px solid #ddd;
text-align: left; font-size: 14px; }} img {{ max-width: 100%; }}
.legend span {{ margin-right: 1.5em; }}
</style></head><body>
<h1>edge360 replay</h1>
<p class="legend"><span style="color:#1f77b4">target (model)</span>
<span style="color:#2ca02c">achieved (replayer ground truth)</span>
<span style="color:#d62728">server (/metrics)</span></p>
{chart}
<h2>Figures</h2><table>{rows}</table>
</body></html>
"""
