"""Titles on disk: check that a title folder is a complete, self-contained HLS title, and scan a
media root for them.

A title is one folder; its master playlists are the *.m3u8 files at its top that carry
EXT-X-STREAM-INF. Every file a playlist references must exist inside the folder, and every byte
range (EXT-X-BYTERANGE, EXT-X-MAP BYTERANGE) must lie inside its file. Parsing is playlist's
(m3u8); this module only reads files and checks containment. It runs at start-up and on rescans,
never per request, so its file reads are plain blocking calls (the caller runs it in a thread).
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from edge360.core.errors import InvalidMedia
from edge360.hls import playlist


@dataclass(frozen=True, slots=True)
class Rendition:
    """A playlist a master names: `path` relative to the title folder, `role` "variant", "iframe",
    or the EXT-X-MEDIA TYPE lower-cased ("audio", "subtitles", ...)."""

    master: str
    path: str
    role: str
    name: str
    bandwidth: int | None
    average_bandwidth: int | None
    resolution: tuple[int, int] | None
    codecs: str | None
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    path: str  # relative to the title folder
    duration: float
    byterange: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class MediaPlaylistInfo:
    path: str  # relative to the title folder
    target_duration: float | None
    vod: bool
    segments: tuple[SegmentInfo, ...]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


@dataclass(frozen=True, slots=True)
class TitleInfo:
    name: str
    masters: tuple[str, ...]
    renditions: tuple[Rendition, ...]
    playlists: tuple[MediaPlaylistInfo, ...]

    def playlist(self, path: str) -> MediaPlaylistInfo | None:
        return next((p for p in self.playlists if p.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = asdict(self)
        for p, info in zip(d["playlists"], self.playlists, strict=True):
            p["duration"] = info.duration
        return d


def _inside(title: str, base_rel: str, uri: str) -> str:
    """The title-relative path `uri` (written in the playlist at `base_rel`) names; refuses absolute
    URLs and paths that leave the title folder."""
    if playlist.is_absolute(uri) or uri.startswith("/") or "\\" in uri:
        raise InvalidMedia(f"title {title!r}: {base_rel} references {uri!r} outside the title")
    path = unquote(uri.split("#", 1)[0].split("?", 1)[0])
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base_rel), path))
    if joined == ".." or joined.startswith("../") or joined.startswith("/") or not path:
        raise InvalidMedia(f"title {title!r}: {base_rel} references {uri!r} outside the title")
    return joined


class _Checker:
    """Walks one title, remembering file sizes so a single-file rendition is stat'ed once."""

    def __init__(self, title_dir: Path) -> None:
        self.dir = title_dir
        self.title = title_dir.name
        self.sizes: dict[str, int] = {}

    def fail(self, message: str) -> InvalidMedia:
        return InvalidMedia(f"title {self.title!r}: {message}")

    def size(self, rel: str, referrer: str) -> int:
        if rel not in self.sizes:
            f = self.dir / rel
            if not f.is_file():
                raise self.fail(f"{referrer} references missing file {rel}")
            self.sizes[rel] = f.stat().st_size
        return self.sizes[rel]

    def check_range(self, rel: str, byterange: tuple[int, int] | None, referrer: str) -> None:
        size = self.size(rel, referrer)
        if byterange is not None and byterange[0] + byterange[1] > size:
            offset, length = byterange
            raise self.fail(f"{referrer}: byte range {length}@{offset} of {rel} lies outside the "
                            f"file ({size} bytes)")

    def read(self, rel: str, referrer: str) -> str:
        self.size(rel, referrer)
        try:
            return (self.dir / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail(f"cannot read {rel}: {e}") from None

    def media(self, rel: str, referrer: str) -> MediaPlaylistInfo:
        text = self.read(rel, referrer)
        try:
            parsed = playlist.parse_media(text)
        except InvalidMedia as e:
            raise self.fail(f"{rel}: {e}") from None
        for ref in parsed.references:
            self.check_range(_inside(self.title, rel, ref.uri), ref.byterange, rel)
        segs = []
        for seg in parsed.segments:
            target = _inside(self.title, rel, seg.path)
            self.check_range(target, seg.byterange, rel)
            segs.append(SegmentInfo(target, seg.duration, seg.byterange))
        if not segs:
            raise self.fail(f"{rel} has no segments")
        return MediaPlaylistInfo(rel, parsed.target_duration, parsed.vod, tuple(segs))


def _is_master(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.startswith("#EXT-X-STREAM-INF") for line in text.splitlines())


def find_masters(title_dir: Path) -> list[str]:
    """Names of the master playlists at the top of a title folder, sorted."""
    return sorted(p.name for p in title_dir.glob("*.m3u8") if p.is_file() and _is_master(p))


def check_title(title_dir: Path) -> TitleInfo:
    """Validate a title folder and describe it; raises InvalidMedia naming the title and the first
    problem (no master, missing file, escape from the folder, byte range outside its file)."""
    checker = _Checker(title_dir)
    if not title_dir.is_dir():
        raise checker.fail("not a directory")
    masters = find_masters(title_dir)
    if not masters:
        raise checker.fail("no master playlist (a *.m3u8 with EXT-X-STREAM-INF) at its top")
    renditions: list[Rendition] = []
    playlists: dict[str, MediaPlaylistInfo] = {}
    for master in masters:
        text = checker.read(master, master)
        try:
            parsed = playlist.parse_master(text)
        except InvalidMedia as e:
            raise checker.fail(f"{master}: {e}") from None
        for uri in parsed.other_uris:
            checker.size(_inside(checker.title, master, uri), master)
        for v in parsed.variants:
            rel = _inside(checker.title, master, v.uri)
            if rel not in playlists:
                playlists[rel] = checker.media(rel, master)
            name = v.name or posixpath.dirname(rel) or rel.removesuffix(".m3u8")
            renditions.append(Rendition(
                master=master, path=rel, role=v.role, name=name,
                bandwidth=v.bandwidth, average_bandwidth=v.average_bandwidth,
                resolution=v.resolution, codecs=v.codecs, frame_rate=v.frame_rate))
    return TitleInfo(title_dir.name, tuple(masters), tuple(renditions), tuple(playlists.values()))


def scan_media_root(root: Path) -> tuple[dict[str, TitleInfo], dict[str, str]]:
    """(good titles by name, broken title name -> error message) for each folder of `root`; a folder
    without a master playlist is not a title and is ignored."""
    good: dict[str, TitleInfo] = {}
    broken: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not find_masters(folder):
            continue
        try:
            good[folder.name] = check_title(folder)
        except InvalidMedia as e:
            broken[folder.name] = str(e)
    return good, broken
