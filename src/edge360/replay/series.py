"""What a replay report plots: the concurrency series, the rendition mix, and shared chart helpers.

Pure data and arithmetic, shared by the matplotlib figure (plot.py) and the dependency-free SVG
fallback (svg.py) so both draw the same three panels with the same peaks, ticks and labels.
Time is hours after the release moment throughout; ticks read "h:mm after release".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: the nominal ladder of docs/FIRST-DAY.md (bit/s, name): the model has no target, so its expected
#: mix is the link distribution mapped onto this ladder by the players' own rule.
NOMINAL_LADDER: tuple[tuple[float, str], ...] = (
    (1e6, "≤540p ~1 Mbit/s"), (3e6, "720p ~3 Mbit/s"), (6e6, "1080p ~6 Mbit/s"),
    (16e6, "2160p ~16 Mbit/s"))

COLORS = {"target": "#1f77b4", "achieved": "#2ca02c", "server": "#d62728", "arrivals": "#7f7f7f",
          "watching": "#9467bd"}
#: the concurrency lines, in drawing order
LINES = ("target", "achieved", "watching", "server")
MIX_COLORS = ("#fdd49e", "#fc8d59", "#d7301f", "#7f0000", "#4a1486", "#08519c")


@dataclass(frozen=True)
class SeriesPoint:
    """One row of series.csv: hours after release, the concurrencies, arrivals per second, and (in
    a live replay) the requests and errors so far, which show when any errors came."""

    time_h: float
    target: float
    achieved: float | None
    server: float | None
    arrivals: float | None = None
    watching: float | None = None     # viewers between their first frame and their quit
    requests: int | None = None       # the players' requests so far (a live replay's samples)
    errors: int | None = None         # the players' failed requests so far


@dataclass(frozen=True)
class RenditionMix:
    """Share of viewers per rendition over time. `labels` run from the lowest rendition up;
    `shares[i][k]` is label k's share (0..1) at `times_h[i]`. `expected` marks a model-only mix."""

    times_h: tuple[float, ...]
    labels: tuple[str, ...]
    shares: tuple[tuple[float, ...], ...]
    expected: bool
    basis: str

    def overall(self) -> dict[str, float]:
        """Mean share of each rendition over the buckets (rounded, for report.json)."""
        if not self.shares:
            return {}
        n = len(self.shares)
        return {lab: round(sum(row[k] for row in self.shares) / n, 4)
                for k, lab in enumerate(self.labels)}

    @property
    def title(self) -> str:
        return ("rendition mix, expected (model link distribution; no network)" if self.expected
                else f"rendition mix, measured ({self.basis})")


def expected_mix(links: Sequence[tuple[float, float]], headroom: float, times_h: Sequence[float],
                 ladder: Sequence[tuple[float, str]] = NOMINAL_LADDER) -> RenditionMix:
    """The mix the players' rule makes from the link distribution: each link picks the highest
    rendition whose bandwidth fits `headroom` of it, else the lowest. Constant over the day (a link
    change redraws from the same distribution)."""
    rungs = sorted(ladder)
    share = [0.0] * len(rungs)
    for weight, speed in links:
        fitting = [k for k, (bw, _) in enumerate(rungs) if bw <= speed * headroom]
        share[fitting[-1] if fitting else 0] += weight
    total = sum(share) or 1.0
    row = tuple(s / total for s in share)
    return RenditionMix(times_h=tuple(times_h), labels=tuple(lab for _, lab in rungs),
                        shares=tuple(row for _ in times_h), expected=True,
                        basis="model link distribution")


def measured_mix(seconds: dict[tuple[float, str], float], order: dict[str, float],
                 basis: str) -> RenditionMix | None:
    """Shares per time bucket from content seconds fetched: {(bucket hour, label): seconds}.
    `order` gives each label's bandwidth, lowest stacked first. None when nothing was fetched."""
    if not seconds:
        return None
    labels = tuple(sorted(order, key=lambda lab: (order[lab], lab)))
    times = sorted({t for t, _ in seconds})
    rows = []
    for t in times:
        got = [seconds.get((t, lab), 0.0) for lab in labels]
        total = sum(got)
        rows.append(tuple(g / total if total else 0.0 for g in got))
    return RenditionMix(times_h=tuple(times), labels=labels, shares=tuple(rows), expected=False,
                        basis=basis)


def clock(hours: float) -> str:
    """Hours after release as h:mm (9.25 -> '9:15')."""
    minutes = round(hours * 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def hour_ticks(t0: float, t1: float, most: int = 13) -> list[float]:
    """Round tick positions (hours) in [t0, t1]: whole hours for a day, minutes for a slice."""
    span = max(t1 - t0, 1e-9)
    steps_min = (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360)
    step = next((s / 60 for s in steps_min if span / (s / 60) <= most - 1), 6.0)
    first = math.ceil(t0 / step - 1e-9) * step
    return [first + i * step for i in range(int((t1 - first) / step + 1e-9) + 1)]


@dataclass(frozen=True)
class Peak:
    name: str
    value: float
    hour: float


def peaks(series: Sequence[SeriesPoint]) -> list[Peak]:
    """The maximum of each concurrency line present, with the hour it happens at."""
    out = []
    for name in LINES:
        pts = [(getattr(p, name), p.time_h) for p in series if getattr(p, name) is not None]
        if pts:
            value, hour = max(pts, key=lambda vh: (vh[0], -vh[1]))
            out.append(Peak(name=name, value=float(value), hour=hour))
    return out


def arrivals_per_minute(series: Sequence[SeriesPoint]) -> list[tuple[float, float]]:
    return [(p.time_h, p.arrivals * 60) for p in series if p.arrivals is not None]


def line_label(name: str) -> str:
    return {"target": "target (model)", "achieved": "achieved (ground truth, server's rule)",
            "watching": "watching (first frame to quit)", "server": "server (/metrics)"}[name]


def title(summary: dict[str, object]) -> str:
    server = summary.get("server_peak")
    if server is None:
        srv = "n/a (model only)" if is_model(summary) else "n/a (target has no /metrics)"
    else:
        srv = _num(server)
    return (f"edge360 replay — peak viewers: target {_num(summary.get('target_peak'))}, "
            f"achieved {_num(summary.get('achieved_peak'))}, server {srv}")


def is_model(summary: dict[str, object]) -> bool:
    """A --model report: no target was replayed against."""
    return not summary.get("target")


def _num(v: object) -> str:
    return f"{v:,.0f}" if isinstance(v, (int, float)) else "n/a"
