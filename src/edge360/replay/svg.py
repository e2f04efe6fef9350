"""The report's picture without matplotlib: the same three panels as inline SVG (no external refs).

Each panel is a `<g class="panel" id="panel-…">`: concurrency (with peaks marked), arrivals per
minute, rendition mix (stacked shares). Peaks are circled, their value and h:mm in the legend;
legends go in a right-hand margin, never over the data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from edge360.replay.series import (
    COLORS,
    LINES,
    MIX_COLORS,
    RenditionMix,
    SeriesPoint,
    arrivals_per_minute,
    clock,
    hour_ticks,
    line_label,
    peaks,
    title,
)

W, LEFT, PLOT_W = 1100, 80, 780          # the legend margin starts at LEFT + PLOT_W + 20
PANELS = (("concurrency", 300), ("arrivals", 140), ("mix", 200))
GAP, TOP = 34, 50


def render_svg(series: Sequence[SeriesPoint], summary: dict[str, Any],
               mix: RenditionMix | None) -> str:
    if not series:
        return "<p>no data</p>"
    t0, t1 = series[0].time_h, max(series[-1].time_h, series[0].time_h + 1e-9)
    height = TOP + sum(h for _, h in PANELS) + GAP * len(PANELS) + 30
    out = [f'<svg role="img" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
           f'font-family="system-ui, sans-serif" font-size="12">'
           f'<rect width="{W}" height="{height}" fill="#fff"/>'
           f'<text x="{W / 2}" y="24" font-size="15" text-anchor="middle">'
           f'{html.escape(title(summary))}</text>']
    y = TOP
    boxes = {}
    for name, h in PANELS:
        boxes[name] = (y, h)
        y += h + GAP

    def xpos(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * PLOT_W

    # (1) concurrency
    y0, h = boxes["concurrency"]
    top = _nice(max([v for p in series for v in (p.target, p.achieved, p.server, p.watching)
                     if v is not None] + [1.0]) * 1.1)
    yv = _scale(y0, h, top)
    out.append('<g class="panel" id="panel-concurrency">')
    out += _frame(y0, h, top, "concurrent viewers", xpos, t0, t1, yv, percent=False)
    legend = []
    marks = {pk.name: pk for pk in peaks(series)}
    for name in LINES:
        pts = [(p.time_h, getattr(p, name)) for p in series if getattr(p, name) is not None]
        if not pts:
            continue
        pk = marks[name]
        out.append(_polyline(pts, xpos, yv, COLORS[name], 2.0 if name == "target" else 1.4,
                             line_label(name)))
        out.append(f'<circle class="peak" cx="{xpos(pk.hour):.1f}" cy="{yv(pk.value):.1f}" r="5" '
                   f'fill="#fff" stroke="{COLORS[name]}" stroke-width="2"/>')
        legend.append((COLORS[name], line_label(name)))
        legend.append(("none", f"peak {pk.value:,.0f} at {clock(pk.hour)}"))
    out += _legend(y0, legend)
    out.append("</g>")

    # (2) arrivals per minute
    y0, h = boxes["arrivals"]
    arr = arrivals_per_minute(series)
    top = _nice(max([b for _, b in arr] + [1.0]) * 1.1)
    yv = _scale(y0, h, top)
    out.append('<g class="panel" id="panel-arrivals">')
    out += _frame(y0, h, top, "arrivals / min (model)", xpos, t0, t1, yv, percent=False)
    if arr:
        out.append(_polyline(arr, xpos, yv, COLORS["arrivals"], 1.4, "arrivals per minute"))
    out.append("</g>")

    # (3) rendition mix
    y0, h = boxes["mix"]
    yv = _scale(y0, h, 100.0)
    out.append('<g class="panel" id="panel-mix">')
    out += _frame(y0, h, 100.0, "% of viewers per rendition", xpos, t0, t1, yv, percent=True)
    if mix is not None and mix.shares:
        times = list(mix.times_h) if len(mix.times_h) > 1 else [t0, t1]
        rows = list(mix.shares) if len(mix.shares) > 1 else [mix.shares[0]] * 2
        below = [0.0] * len(times)
        legend = []
        for k, lab in enumerate(mix.labels):
            above = [b + row[k] * 100 for b, row in zip(below, rows, strict=True)]
            color = MIX_COLORS[k % len(MIX_COLORS)]
            ring = ([(t, v) for t, v in zip(times, above, strict=True)]
                    + [(t, v) for t, v in zip(times[::-1], below[::-1], strict=True)])
            coords = " ".join(f"{xpos(t):.1f},{yv(v):.1f}" for t, v in ring)
            out.append(f'<polygon points="{coords}" fill="{color}" opacity="0.9">'
                       f'<title>{html.escape(lab)}</title></polygon>')
            legend.append((color, lab))
            below = above
        out.append(f'<text x="{LEFT}" y="{y0 - 6}" font-size="11">{html.escape(mix.title)}</text>')
        out += _legend(y0, legend[::-1])
    out.append(f'<text x="{LEFT + PLOT_W / 2}" y="{y0 + h + 30}" text-anchor="middle">'
               f'time after release (h:mm)</text></g></svg>')
    return "".join(out)


def _nice(v: float) -> float:
    """The smallest 1/2/4/5/8 × 10^k at or above v, so the four grid steps are round numbers."""
    k = 10.0 ** math.floor(math.log10(v))
    return next(m * k for m in (1, 2, 4, 5, 8, 10) if m * k >= v)


def _scale(y0: float, h: float, top: float) -> Callable[[float], float]:
    return lambda v: y0 + h - v / top * h


def _polyline(pts: Sequence[tuple[float, float]], xpos: Callable[[float], float],
              yv: Callable[[float], float], color: str, width: float, name: str) -> str:
    coords = " ".join(f"{xpos(t):.1f},{yv(v):.1f}" for t, v in pts)
    return (f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{coords}">'
            f'<title>{html.escape(name)}</title></polyline>')


def _frame(y0: float, h: float, top: float, ylabel: str, xpos: Callable[[float], float],
           t0: float, t1: float, yv: Callable[[float], float], *, percent: bool) -> list[str]:
    """Axes box, horizontal grid with value labels, hour ticks, and the y label."""
    out = [f'<rect x="{LEFT}" y="{y0}" width="{PLOT_W}" height="{h}" fill="none" '
           f'stroke="#999"/>']
    for i in range(5):
        v = top * i / 4 if not percent else 25.0 * i
        yy = yv(v)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{yy:.1f}" y2="{yy:.1f}" '
                   f'stroke="#eee"/><text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{v:,.0f}</text>')
    for t in hour_ticks(t0, t1):
        x = xpos(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + h}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{y0 + h + 14}" text-anchor="middle" '
                   f'font-size="11">{clock(t)}</text>')
    out.append(f'<text transform="translate(16,{y0 + h / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    return out


def _legend(y0: float, items: Sequence[tuple[str, str]]) -> list[str]:
    x = LEFT + PLOT_W + 20
    return [f'<rect x="{x}" y="{y0 + 6 + 18 * i}" width="14" height="10" fill="{c}"/>'
            f'<text x="{x + 20}" y="{y0 + 15 + 18 * i}" font-size="11">{html.escape(lab)}</text>'
            for i, (c, lab) in enumerate(items)]
