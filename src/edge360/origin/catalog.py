"""The origin's catalog: every servable file of every good title, indexed by its URL path.

Built off the event loop (at start, on a timer and on SIGHUP) from titles.scan_media_root, so a
request costs one dict lookup and no stat(): size, validators, cache lifetime, the rendition a file
belongs to and the duration of each segment are worked out once. Small files (playlists, keys,
subtitles) are held in memory; segments are sent from their files by the kernel. A symlink that
points outside the media root is never indexed, so it can never be served.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge360.config.schema import OriginConfig
from edge360.core.errors import InvalidMedia, NotFound
from edge360.core.kinds import MediaType, media_type
from edge360.core.paths import is_inside
from edge360.hls import playlist
from edge360.hls.rewrite import CompiledPlaylist
from edge360.hls.titles import TitleInfo, scan_media_root
from edge360.origin.files import read_version, stat_version
from edge360.sessions.playout import MAIN, track_of

#: files up to this size are kept in memory (playlists, keys, subtitles, small segments)
SMALL_FILE = 256 * 1024


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One servable file with everything a response needs, computed once."""

    url_path: str  # "/demo/1080p/seg_001.ts"
    fs_path: str
    title: str
    rendition: str  # metric label: the rendition the file belongs to ("none" for masters)
    size: int
    mtime: float
    etag: str
    last_modified: str
    media_type: MediaType
    cache_control: str
    is_master: bool = False
    #: a live or event title's file: written while served, never held back by the settle rule
    live: bool = False
    body: bytes | None = None  # in memory when small
    compiled: CompiledPlaylist | None = None  # playlists, for per-viewer rewriting
    #: seconds of media per segment file, or per byte offset for single-file renditions
    durations: dict[int, float] = field(default_factory=dict)
    #: the play-out track its segments count in (sessions.playout: main, audio or text)
    track: int = MAIN

    def media_seconds(self, range_header: str) -> float | None:
        """Seconds of media an answer of this file carries, for the session's play-out: the
        EXTINF of the segment that starts at the answer's first byte (0 without a Range; a
        single-file rendition's segments by their offsets), 0.0 when none starts there (an init
        section, a whole single-file rendition, a resumed download), None when the file is no
        media segment at all (a playlist, a key)."""
        if self.media_type.kind != "segment":
            return None
        offset = 0
        if range_header.startswith("bytes="):
            first = range_header[6:].split("-", 1)[0].strip()
            if not first.isdigit():
                return 0.0
            offset = int(first)
        return self.durations.get(offset, 0.0)


@dataclass(frozen=True, slots=True)
class Catalog:
    root: str
    titles: dict[str, TitleInfo]
    broken: dict[str, str]
    files: dict[str, MediaFile]
    #: titles with a file modified within origin.settle_seconds of the scan (still arriving)
    settling: tuple[str, ...] = ()
    #: live and event titles (their files are written while served: never held back), and
    #: titles that were live at an earlier scan (a live event that ended)
    live: frozenset[str] = frozenset()


def _playlist_cache_control(text: str, is_master: bool, config: OriginConfig) -> str:
    """Lifetimes per kind (RFC 8216 §6.2.1/§6.2.2 and RFC 9111): VOD playlists never change, a
    master may be re-cut, a live playlist changes every target duration."""
    if is_master:
        return f"public, max-age={config.master_max_age}"
    if playlist.is_vod(text):
        return f"public, max-age={config.vod_max_age}, immutable"
    target = playlist.target_duration(text) or 2.0
    return f"public, max-age={max(1, int(target / 2))}"


def _rendition_names(info: TitleInfo) -> dict[str, str]:
    """Title-relative file path -> rendition label, from the media playlists that name it."""
    names: dict[str, str] = {}
    by_playlist = {r.path: r.name for r in info.renditions}
    for media in info.playlists:
        label = by_playlist.get(media.path) or posixpath.dirname(media.path) or media.path
        names.setdefault(media.path, label)
        for seg in media.segments:
            names.setdefault(seg.path, label)
    return names


def _tracks(info: TitleInfo) -> dict[str, int]:
    """Title-relative segment path -> play-out track, from the role of the playlist that lists
    it (an EXT-X-MEDIA TYPE=AUDIO rendition plays beside the video, subtitles count nothing)."""
    roles = {r.path: r.role for r in info.renditions}
    out: dict[str, int] = {}
    for media in info.playlists:
        role = roles.get(media.path)
        for seg in media.segments:
            out.setdefault(seg.path, track_of(role, seg.path))
    return out


def _durations(info: TitleInfo) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for media in info.playlists:
        for seg in media.segments:
            offset = seg.byterange[0] if seg.byterange else 0
            out.setdefault(seg.path, {})[offset] = seg.duration
    return out


def _index_title(root_real: str, info: TitleInfo, config: OriginConfig,
                 files: dict[str, MediaFile], now: float, live: bool) -> bool:
    """Index one title's files; True when one of them is still settling at `now`."""
    title_dir = os.path.join(root_real, info.name)
    renditions = _rendition_names(info)
    durations = _durations(info)
    tracks = _tracks(info)
    masters = set(info.masters)
    settling = False
    for dirpath, dirnames, filenames in os.walk(title_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            mt = media_type(name)
            if mt is None:
                continue
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if not is_inside(root_real, real):
                continue  # a symlink pointing out of the media root is never served
            rel = os.path.relpath(full, title_dir).replace(os.sep, "/")
            body = None
            try:
                version = stat_version(real)
                if version is None:
                    continue
                if version.size <= SMALL_FILE:
                    body, version = read_version(real)
            except NotFound:
                continue  # gone or changing while we looked: the next scan takes it
            settling = settling or (now - version.mtime < config.settle_seconds)
            is_master = rel in masters
            compiled = None
            if mt.kind == "playlist" and body is not None:
                text = body.decode("utf-8", "replace")
                cache_control = _playlist_cache_control(text, is_master, config)
                compiled = CompiledPlaylist.compile(text)
            elif mt.kind == "segment":
                cache_control = f"public, max-age={config.vod_max_age}, immutable"
            else:
                cache_control = f"public, max-age={config.master_max_age}"
            files[f"/{info.name}/{rel}"] = MediaFile(
                url_path=f"/{info.name}/{rel}", fs_path=real, title=info.name,
                rendition="none" if is_master else renditions.get(rel, "none"),
                size=version.size, mtime=version.mtime, etag=version.etag,
                last_modified=version.last_modified, media_type=mt,
                cache_control=cache_control, is_master=is_master, live=live, body=body,
                compiled=compiled, durations=durations.get(rel, {}),
                track=tracks.get(rel, track_of(None, rel)))
    return settling and not live


def build(root: str, config: OriginConfig, was_live: frozenset[str] = frozenset()) -> Catalog:
    """Scan the media root (blocking; run it in a thread). Broken titles are listed, not served;
    titles still arriving are listed as settling (their recent files answer 503 until settled).
    `was_live`: the live titles of the previous scan (an event that ended stays exempt)."""
    root_real = os.path.realpath(root)
    titles, broken = scan_media_root(Path(root_real))
    files: dict[str, MediaFile] = {}
    now = time.time()
    live = frozenset(name for name, info in titles.items()
                     if name in was_live or any(not p.vod for p in info.playlists))
    settling = tuple(sorted(name for name, info in titles.items()
                            if _index_title(root_real, info, config, files, now,
                                            name in live)))
    return Catalog(root=root_real, titles=titles, broken=broken, files=files, settling=settling,
                   live=live)


def fresh_segments(files: Mapping[str, MediaFile], listing: MediaFile,
                   root_real: str) -> list[MediaFile]:
    """The segments a live playlist, just read again, names that `files` does not hold yet
    (blocking: run it in a thread). The origin rereads a live playlist within a second of its
    change but rescans the media root only every origin.rescan_interval, so without this a
    player would be sent to segments that answer 404 until the next scan. Each new segment is
    indexed like a segment of the same playlist the catalog already holds (its rendition, track
    and lifetime); one that is not on disk yet, or points out of its title, is left out. New
    byte ranges of a file already indexed wait for the scan (their durations, for play-out)."""
    if not listing.live or listing.body is None or listing.compiled is None:
        return []
    prefix = f"/{listing.title}/"
    try:
        named = playlist.segments(listing.body.decode("utf-8", "replace"),
                                  listing.url_path[len(prefix):])
    except InvalidMedia:
        return []
    template = next((files[prefix + seg.path] for seg in named if prefix + seg.path in files),
                    None)
    if template is None:
        return []
    title_dir = os.path.realpath(os.path.join(root_real, listing.title))
    added: dict[str, MediaFile] = {}
    for seg in named:
        url = prefix + seg.path
        mt = media_type(seg.path)
        if url in files or url in added or mt is None or mt.kind != "segment":
            continue
        real = os.path.realpath(os.path.join(title_dir, seg.path))
        if not is_inside(title_dir, real):
            continue
        try:
            version = stat_version(real)
            body = None
            if version is not None and version.size <= SMALL_FILE:
                body, version = read_version(real)
        except NotFound:
            continue
        if version is None:
            continue
        offset = seg.byterange[0] if seg.byterange else 0
        added[url] = dataclasses.replace(
            template, url_path=url, fs_path=real, size=version.size, mtime=version.mtime,
            etag=version.etag, last_modified=version.last_modified, media_type=mt, body=body,
            durations={offset: seg.duration})
    return list(added.values())
