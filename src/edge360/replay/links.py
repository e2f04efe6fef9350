"""The virtual viewers' simulated links and the rendition each picks (docs/FIRST-DAY.md).

Pure. A viewer's link is drawn from LINKS (share of viewers, bit/s: fibre, good, fair, slow
mobile); it plays the highest rendition whose BANDWIDTH fits HEADROOM of its link, or the lowest
when none does.
"""

from __future__ import annotations

from typing import TypeVar

LINKS: tuple[tuple[float, float], ...] = ((0.25, 25e6), (0.35, 8e6), (0.25, 4e6), (0.15, 1.5e6))
HEADROOM = 0.8            # a player picks a rendition whose bandwidth fits 80 % of its link

T = TypeVar("T")


def draw_link(r: float, links: tuple[tuple[float, float], ...] = LINKS) -> float:
    """The link speed at cumulative share `r` (0 <= r < 1) of the viewers."""
    for share, speed in links:
        if r < share:
            return speed
        r -= share
    return links[-1][1]


def pick(variants: list[tuple[int, T]], link: float) -> T:
    """The highest of (bandwidth, x) pairs sorted by bandwidth that fits the link, else the
    lowest."""
    fitting = [x for bw, x in variants if bw <= link * HEADROOM]
    return fitting[-1] if fitting else variants[0][1]


def expected_bitrate(bandwidths: list[int],
                     links: tuple[tuple[float, float], ...] = LINKS) -> float:
    """The mean BANDWIDTH the players pick from this ladder by their link mix (bit/s)."""
    ladder = sorted(bandwidths)
    if not ladder:
        return 0.0
    total = sum(share for share, _ in links) or 1.0
    return sum(share * pick([(bw, bw) for bw in ladder], speed)
               for share, speed in links) / total
