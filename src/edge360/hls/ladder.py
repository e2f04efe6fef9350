"""The bitrate ladder: which renditions to encode, per codec, at what picture size and caps.

The default targets are the average video bit rates of Apple's "HLS Authoring Specification for
Apple Devices" (its 16:9 table, docs/PACKAGING.md), 2160p down to 360p: H.264 up to 1080p (the
specification caps H.264 at High profile level 4.2, which 2160p exceeds) and HEVC up to 2160p. A
rung is named after the height of its 16:9 box; a picture of another shape is fitted inside the
box, and a rung whose box would enlarge the source is dropped (never upscale).

Whatever the targets, the measured ladder must have no hole: sorted by measured peak BANDWIDTH,
each rendition is at most twice the one below it, so a player whose link falls between two rungs
never has to drop to less than half of what it could carry. `rebalance` finds a ladder that breaks
this and gives the rungs to encode again their new rates. Pure code.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from edge360.core.errors import UsageError

CODECS = ("h264", "hevc")
#: the largest ratio allowed between adjacent measured peak bit rates of one codec's ladder
MAX_STEP = 2.0


@dataclass(frozen=True, slots=True)
class Rung:
    """One rendition of a codec's ladder: its 16:9 box height and its caps in kbit/s (the video
    figure is the VBV cap of a capped-CRF encode: easy pictures come out smaller)."""

    name: str
    height: int
    video_kbps: int
    audio_kbps: int


@dataclass(frozen=True, slots=True)
class Target:
    """A rung planned for one codec and one source: the picture size it is encoded at."""

    codec: str
    rung: Rung
    width: int
    height: int
    #: set by `rebalance`: a VBV cap other than the rung's, or an average bit rate (ABR) instead
    #: of capped CRF, both in kbit/s (0: not set)
    cap_kbps: int = 0
    abr_kbps: int = 0

    @property
    def folder(self) -> str:
        return f"{self.codec}_{self.rung.name}"

    @property
    def video_cap(self) -> int:
        return self.cap_kbps or self.rung.video_kbps

    @property
    def rate_name(self) -> str:
        """How the video rate is set, for file names: `c6000k` (capped CRF) or `a2500k` (ABR)."""
        return f"a{self.abr_kbps}k" if self.abr_kbps else f"c{self.video_cap}k"


#: name, box height, H.264 kbit/s, HEVC kbit/s, audio kbit/s. Apple's table lists two rates at
#: 432p; the upper one is encoded at 480p here so every rung has a height of its own. H.264 has
#: no figure above 1080p there: asked for by name, it gets the HEVC figure times 4/3 (Apple's own
#: H.264:HEVC ratio at 1080p, 6000:4500). 240p (Apple's 416x234 row) is not in the default ladder.
_TABLE: tuple[tuple[str, int, int | None, int, int], ...] = (
    ("2160p", 2160, None, 11600, 128),
    ("1440p", 1440, None, 8100, 128),
    ("1080p", 1080, 6000, 4500, 128),
    ("720p", 720, 3000, 2400, 128),
    ("540p", 540, 2000, 1600, 96),
    ("480p", 480, 1100, 800, 96),
    ("432p", 432, 730, 570, 64),
    ("360p", 360, 365, 290, 64),
    ("240p", 240, 145, 145, 64),
)
KNOWN = tuple(row[0] for row in _TABLE)
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")
_NAME_RE = re.compile(r"[1-9]\d{1,3}p")


def known_rung(name: str, codec: str) -> Rung | None:
    for row_name, height, h264, hevc, audio in _TABLE:
        if row_name == name:
            video = hevc if codec == "hevc" else (h264 or round(hevc * 4 / 3))
            return Rung(name, height, video, audio)
    return None


def default_ladder(codec: str) -> tuple[Rung, ...]:
    """Apple's rows from 2160p down to 360p that have a figure for `codec`."""
    rungs = (known_rung(name, codec) for name, _h, h264, _hevc, _a in _TABLE
             if name != "240p" and (codec == "hevc" or h264 is not None))
    return tuple(r for r in rungs if r is not None)


def parse_codecs(spec: str) -> tuple[str, ...]:
    """`h264`, `hevc` or both, comma-separated, in the order given."""
    names = [c.strip().lower() for c in spec.split(",") if c.strip()]
    if not names:
        raise UsageError("--codecs is empty (use h264, hevc or h264,hevc)")
    for name in names:
        if name not in CODECS:
            raise UsageError(f"unknown codec {name!r} (use h264, hevc or h264,hevc)")
    if len(set(names)) != len(names):
        raise UsageError(f"codec named twice in {spec!r}")
    return tuple(names)


def _kbps(text: str) -> int:
    m = _RATE_RE.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"bad bitrate {text!r} (use e.g. 800k or 2.5M)")
    value = float(m.group(1)) * {"": 0.001, "k": 1, "m": 1000}[m.group(2).lower()]
    if not 1 <= value <= 1_000_000:
        raise UsageError(f"bitrate {text!r} out of range")
    return round(value)


def _rung(item: str, codec: str) -> Rung:
    name, *rates = item.split(":")
    if len(rates) > 2:
        raise UsageError(f"bad rung {item!r} (NAME[:VIDEO[:AUDIO]])")
    base = known_rung(name, codec)
    if base is None:
        if _NAME_RE.fullmatch(name) is None or not rates:
            raise UsageError(f"unknown rung {name!r} (known: {', '.join(KNOWN)}; "
                             "other heights need a bitrate, e.g. 900p:4000k)")
        base = Rung(name, int(name[:-1]), 0, 128)
    if rates:
        base = replace(base, video_kbps=_kbps(rates[0]))
    if len(rates) == 2:
        base = replace(base, audio_kbps=_kbps(rates[1]))
    return base


def parse_ladder(spec: str | None, codecs: Sequence[str]) -> dict[str, tuple[Rung, ...]]:
    """Each codec's rungs, tallest first. `spec` is `[CODEC/]NAME[:VIDEO[:AUDIO]],...`: a rung
    without a codec is encoded for every codec (a known name without a rate takes that codec's
    figure), `hevc/2160p:9M` for one codec only. None: the default ladder of each codec."""
    if spec is None:
        return {c: default_ladder(c) for c in codecs}
    ladders: dict[str, list[Rung]] = {c: [] for c in codecs}
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        codec, slash, rest = item.partition("/")
        if not slash:
            for c in codecs:
                ladders[c].append(_rung(item, c))
            continue
        if codec not in ladders:
            raise UsageError(f"rung {item!r} names a codec that is not in --codecs")
        ladders[codec].append(_rung(rest, codec))
    for codec, rungs in ladders.items():
        if not rungs:
            raise UsageError(f"the ladder has no rung for {codec}")
        if len({r.height for r in rungs}) != len(rungs):
            raise UsageError(f"two {codec} rungs of the same height")
    return {c: tuple(sorted(r, key=lambda x: -x.height)) for c, r in ladders.items()}


def _even(x: float, limit: float) -> int:
    """`x` rounded to an even number (4:2:0 chroma needs even dimensions), never above `limit`."""
    return max(2, min(2 * round(x / 2), 2 * math.floor(limit / 2)))


def fit(width: int, height: int, sar: Fraction, box_height: int) -> tuple[int, int] | None:
    """The picture size of a source of `width`x`height` coded pixels (sample aspect ratio `sar`)
    fitted inside the 16:9 box `box_height` tall, in square pixels; None if that enlarges it."""
    display_width = width * sar
    box_width = 2 * round(box_height * 8 / 9)
    scale = min(Fraction(box_width) / display_width, Fraction(box_height, height))
    if scale > 1:
        return None
    return (_even(float(display_width * scale), float(display_width)),
            _even(float(height * scale), height))


def plan(ladders: Mapping[str, Sequence[Rung]], width: int, height: int,
         sar: Fraction = Fraction(1)) -> tuple[Target, ...]:
    """Every codec's targets, tallest first, dropping rungs that would upscale. A source smaller
    than every rung of a codec gets one rung at its own size with the lowest rung's rates."""
    targets: list[Target] = []
    for codec, rungs in ladders.items():
        fitted = []
        for r in sorted(rungs, key=lambda x: -x.height):
            size = fit(width, height, sar, r.height)
            if size is not None:
                fitted.append(Target(codec, r, *size))
        if not fitted:
            lowest = min(rungs, key=lambda r: r.height)
            w, h = _even(float(width * sar), float(width * sar)), _even(height, height)
            fitted.append(Target(codec, replace(lowest, name=f"{h}p", height=h), w, h))
        targets += fitted
    return tuple(targets)


@dataclass(frozen=True, slots=True)
class Measured:
    """A rendition as encoded: its target and what its segments measured, in bit/s."""

    target: Target
    peak: int
    average: int
    audio: int


def has_hole(peaks: Iterable[int]) -> bool:
    """Whether two rungs, in rising order of peak, are more than MAX_STEP apart."""
    ordered = sorted(peaks)
    return any(high > MAX_STEP * low for low, high in itertools.pairwise(ordered))


def _non_increasing(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The weighted least-squares non-increasing fit of `values` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([value * weight, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, weight_sum, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += weight_sum
            blocks[-1][2] += count
    return [total / weight for total, weight, count in blocks for _ in range(int(count))]


def balanced_peaks(peaks: Sequence[float], step: float) -> list[float]:
    """The peaks nearest to `peaks` (in rising order) in which none is more than `step` times the
    one before: least squares on their logarithms, so a rung moves by factors and every rung of a
    hole shares the move. With y the logs and c = log(step), y[i+1] - y[i] <= c is y[i] - i c
    non-increasing: an isotonic regression, which keeps the order. The lowest peak weighs a
    hundred times the others: it is the rung a weak link holds, so it is raised last."""
    c = math.log(step)
    shifted = [math.log(max(p, 1.0)) - i * c for i, p in enumerate(peaks)]
    weights = [100.0] + [1.0] * (len(peaks) - 1)
    return [math.exp(z + i * c) for i, z in enumerate(_non_increasing(shifted, weights))]


def rebalance(measured: Sequence[Measured], margin: float = 0.9,
              tolerance: float = 0.03) -> list[Target]:
    """The rungs of one codec's ladder to encode again, with their new rates, when two of them
    (by rising peak, as a player sees them) are more than MAX_STEP apart; none otherwise. Targets
    are the balanced peaks at MAX_STEP x `margin`; a rung within `tolerance` of its target is left
    alone. Audio does not scale, so the video part moves: a rung to lower gets a lower VBV cap (a
    hard bound, so it lands), a rung to raise an average bit rate (ABR: more bits whatever its
    CRF would spend)."""
    rising = sorted(measured, key=lambda m: m.peak)
    if not has_hole(m.peak for m in rising):
        return []
    wanted = balanced_peaks([m.peak for m in rising], MAX_STEP * margin)
    out = []
    for m, goal in zip(rising, wanted, strict=True):
        if abs(goal / m.peak - 1) <= tolerance:
            continue
        factor = max(1.0, goal - m.audio) / max(1.0, m.peak - m.audio)
        t = m.target
        if t.abr_kbps:
            out.append(replace(t, abr_kbps=max(16, round(t.abr_kbps * factor))))
        elif factor < 1:
            video_peak_kbps = (m.peak - m.audio) / 1000
            out.append(replace(t, cap_kbps=max(16, math.floor(
                min(t.video_cap, video_peak_kbps) * factor))))
        else:
            out.append(replace(t, abr_kbps=max(16, round((m.average - m.audio) / 1000 * factor))))
    return out
