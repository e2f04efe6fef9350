"""Shaping by egress: which renditions a new viewer's master playlist keeps when the node's egress
budget runs short (docs/OVERLOAD.md, "Shaping").

The node projects its egress as the sum, over its active sessions, of their rendition's
BANDWIDTH (RFC 8216 §4.3.4.2: the peak bit rate of the variant). Past SHAPE_AT of the budget, a
new viewer's master leaves out the variants above a cap: the highest first, down to the first
rung that still fits in what is left of the budget, so existing viewers keep theirs and the new
one starts where the budget has room. Each codec family (H.264, HEVC, ...) keeps at least its
lowest rung, so no player is left without a variant it can decode. Pure: text in, text out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from edge360.hls.playlist import attributes, is_absolute, resolve

#: shaping starts when the projected egress passes this share of server.egress_limit
SHAPE_AT = 0.9
#: CODECS entries that are audio (or text), not the video family a player must decode
_NOT_VIDEO = ("mp4a", "ac-3", "ec-3", "ac-4", "opus", "flac", "alac", "mp3", "dtsc", "dtse",
              "dtsh", "dtsl", "stpp", "wvtt")


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF of a master: its tag line, the URI line after it, what it costs."""

    tag: int  # index of the tag line
    uri: int  # index of its URI line
    bandwidth: int
    family: str  # the video codec (CODECS' first non-audio entry, before its first '.')
    path: str | None  # the URI resolved against the master, None when absolute


def _lines(text: str) -> list[str]:
    return text.split("\n")


def family_of(codecs: str) -> str:
    for entry in codecs.split(","):
        name = entry.strip().split(".", 1)[0].lower()
        if name and name not in _NOT_VIDEO:
            return name
    return ""


def variants(text: str, master_path: str) -> list[Variant]:
    """Every EXT-X-STREAM-INF of the master with the URI line that follows it."""
    lines = _lines(text)
    out: list[Variant] = []
    pending: tuple[int, int, str] | None = None
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = {n: v.strip('"') for n, v, _s, _e in attributes(line)}
            try:
                bandwidth = int(attrs.get("BANDWIDTH", "0"))
            except ValueError:
                bandwidth = 0
            pending = (i, bandwidth, family_of(attrs.get("CODECS", "")))
        elif pending is not None and line and not line.startswith("#"):
            uri = line.strip()
            path = None if is_absolute(uri) else resolve(master_path, uri)
            out.append(Variant(pending[0], i, pending[1], pending[2], path))
            pending = None
    return out


def rendition_label(path: str, title: str) -> str:
    """The label sessions count a media playlist's segments under (its folder in the title, or
    its name), as both roles label them."""
    rel = path.removeprefix(f"/{title}/")
    return posixpath.dirname(rel) or rel.removesuffix(".m3u8")


def ladder(text: str, master_path: str, title: str) -> dict[str, int]:
    """Rendition label -> BANDWIDTH of the master's variants (the highest when two share one)."""
    out: dict[str, int] = {}
    for v in variants(text, master_path):
        if v.path is not None and v.bandwidth > 0:
            label = rendition_label(v.path, title)
            out[label] = max(out.get(label, 0), v.bandwidth)
    return out


def projected(active: Iterable[tuple[tuple[str, str], int]],
              bandwidths: dict[tuple[str, str], int]) -> float:
    """Bits a second the active sessions draw: each at its rendition's BANDWIDTH (a session with
    no segment yet, or of an unknown rendition, draws nothing that can be known)."""
    return float(sum(n * bandwidths.get(label, 0) for label, n in active))


def cap(rungs: Iterable[int], projected_bps: float, limit: float) -> int | None:
    """The highest BANDWIDTH a new viewer may get, or None when the node is not shaping: below
    SHAPE_AT of `limit` (or with no limit). The highest rung that fits in what is left of the
    budget; when none fits, the lowest."""
    ladder_ = sorted({r for r in rungs if r > 0})
    if limit <= 0 or not ladder_ or projected_bps <= SHAPE_AT * limit:
        return None
    room = limit - projected_bps
    fitting = [r for r in ladder_ if r <= room]
    return fitting[-1] if fitting else ladder_[0]


def shaped(text: str, master_path: str, top: int) -> tuple[str, int]:
    """The master without the variants above `top` (each codec family keeps its lowest rung);
    also how many were left out."""
    found = variants(text, master_path)
    lowest: dict[str, int] = {}
    for v in found:
        if v.bandwidth > 0 and (v.family not in lowest or v.bandwidth < lowest[v.family]):
            lowest[v.family] = v.bandwidth
    drop: set[int] = set()
    for v in found:
        if v.bandwidth > top and v.bandwidth != lowest.get(v.family):
            drop.update(range(v.tag, v.uri + 1))
    if not drop:
        return text, 0
    lines = _lines(text)
    removed = sum(1 for v in found if v.tag in drop)
    return "\n".join(line for i, line in enumerate(lines) if i not in drop), removed
