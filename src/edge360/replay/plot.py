"""report.png with matplotlib (an optional extra): three panels sharing the time axis.

(1) concurrent viewers — target, achieved, server-reported — each peak marked, its value and h:mm
in the legend;
(2) arrivals per minute; (3) the rendition mix as a stacked area of shares. Legends sit in a
margin column to the right so they never cover data; with --window the margin also shows where the
window lies in the whole day (shaded).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
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

WIDTH_PX, HEIGHT_PX, DPI = 1200, 900, 100


def render_png(series: Sequence[SeriesPoint], summary: dict[str, Any], mix: RenditionMix | None,
               day: Sequence[tuple[float, float]] | None) -> bytes | None:
    """The figure as PNG bytes (WIDTH_PX × HEIGHT_PX); None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")       # no display: render to memory only
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter
    except ImportError:
        return None
    fig = plt.figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    grid = fig.add_gridspec(3, 2, width_ratios=(4.3, 1), height_ratios=(2.3, 1.1, 1.5),
                            left=0.08, right=0.98, top=0.93, bottom=0.07, hspace=0.12,
                            wspace=0.04)
    ax1 = fig.add_subplot(grid[0, 0])
    ax2 = fig.add_subplot(grid[1, 0], sharex=ax1)
    ax3 = fig.add_subplot(grid[2, 0], sharex=ax1)
    side = [fig.add_subplot(grid[r, 1]) for r in range(3)]
    for s in side:
        s.axis("off")
    fig.suptitle(title(summary), fontsize=13)
    t0 = series[0].time_h if series else 0.0
    # a run of one sample still gets a time axis (a minute wide)
    t1 = max(series[-1].time_h, t0 + 1 / 60) if series else 1.0

    top = 0.0
    marks = {pk.name: pk for pk in peaks(series)}
    for name in LINES:
        pts = [(p.time_h, getattr(p, name)) for p in series if getattr(p, name) is not None]
        if not pts:
            continue
        pk = marks[name]
        ax1.plot([a for a, _ in pts], [b for _, b in pts], color=COLORS[name],
                 lw=2.0 if name == "target" else 1.4,
                 label=f"{line_label(name)}\n  peak {pk.value:,.0f} at {clock(pk.hour)}")
        ax1.plot([pk.hour], [pk.value], "o", color=COLORS[name], ms=7, mfc="white", mew=2)
        top = max(top, *(b for _, b in pts))
    ax1.set_ylim(0, max(top, 1.0) * 1.1)
    ax1.set_ylabel("concurrent viewers")
    ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax1.grid(alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    side[0].legend(handles, labels, loc="upper left", fontsize=9, frameon=False,
                   title="concurrent viewers (○ = peak)", title_fontsize=9, alignment="left")

    arr = arrivals_per_minute(series)
    if arr:
        ax2.plot([a for a, _ in arr], [b for _, b in arr], color=COLORS["arrivals"], lw=1.4)
        ax2.fill_between([a for a, _ in arr], [b for _, b in arr], color=COLORS["arrivals"],
                         alpha=0.15)
        ax2.set_ylim(0, max(b for _, b in arr) * 1.15 or 1.0)
    ax2.set_ylabel("arrivals / min")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
    ax2.grid(alpha=0.3)
    window = summary.get("window")
    if day and isinstance(window, list) and tuple(window) != (0.0, 24.0):
        side[1].remove()
        _day_overview(fig, grid[1, 1], day, (float(window[0]), float(window[1])))
    else:
        side[1].text(0, 0.95, "new viewers per minute\n(model arrival curve)", fontsize=9,
                     va="top", transform=side[1].transAxes)

    if mix is not None and mix.shares:
        layers = [[row[k] * 100 for row in mix.shares] for k in range(len(mix.labels))]
        colors = [MIX_COLORS[k % len(MIX_COLORS)] for k in range(len(mix.labels))]
        times = list(mix.times_h)
        if len(times) == 1:        # one bucket: draw it across the span rather than a sliver
            times, layers = [t0, t1], [[v[0], v[0]] for v in layers]
        ax3.stackplot(times, *layers, colors=colors, labels=list(mix.labels), alpha=0.9)
        h3, l3 = ax3.get_legend_handles_labels()
        side[2].legend(h3[::-1], l3[::-1], loc="upper left", fontsize=9, frameon=False,
                       title="expected" if mix.expected else "measured", title_fontsize=9,
                       alignment="left")
        ax3.set_title(mix.title, fontsize=9, loc="left")
    else:
        ax3.text(0.5, 0.5, "no rendition data", transform=ax3.transAxes, ha="center")
    ax3.set_ylim(0, 100)
    ax3.set_ylabel("% of viewers\nper rendition")
    ax3.set_xlabel("time after release (h:mm)")

    ticks = hour_ticks(t0, t1)
    ax3.set_xlim(t0, t1)
    ax3.xaxis.set_major_locator(FixedLocator(ticks))
    ax3.xaxis.set_major_formatter(FuncFormatter(lambda v, _: clock(v)))
    for ax in (ax1, ax2):
        ax.tick_params(labelbottom=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _day_overview(fig: Any, cell: Any, day: Sequence[tuple[float, float]],
                  window: tuple[float, float]) -> None:
    """A small whole-day target curve with the replayed window shaded."""
    ax = fig.add_subplot(cell)
    ax.plot([h for h, _ in day], [c for _, c in day], color=COLORS["target"], lw=1)
    mid, half = (window[0] + window[1]) / 2, max(window[1] - window[0], 0.3) / 2  # visible
    ax.axvspan(mid - half, mid + half, color="#ff7f0e", alpha=0.4, lw=0)
    ax.set_xlim(0, 24)
    ax.set_ylim(0, max((c for _, c in day), default=1.0) * 1.1)
    ax.set_xticks([0, 6, 12, 18, 24])
    ax.tick_params(labelsize=7, labelleft=False, left=False)
    ax.set_title(f"the day; window {clock(window[0])}–{clock(window[1])} shaded", fontsize=8)
