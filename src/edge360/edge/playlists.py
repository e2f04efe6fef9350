"""What the edge knows from the playlists it has passed on: which rendition a segment belongs to
(session and egress labels), each segment's duration and track (the sessions' play-out rule,
late-segment counting), the segments that follow one (prefetch), and the compiled form of each
stored playlist (per-viewer rewriting).

Everything is learnt from the upstream copies as they are fetched (RFC 8216 §4: a media
playlist lists its segments in order); every table is bounded and forgets the oldest first.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass

from edge360.core.errors import InvalidMedia
from edge360.core.lru import Memo
from edge360.hls import playlist
from edge360.hls.playlist import Segment
from edge360.hls.rewrite import CompiledPlaylist
from edge360.sessions.playout import MAIN, track_of

MAX_PLAYLISTS = 10_000
MAX_SEGMENTS = 500_000
MAX_COMPILED = 2_000
MAX_MASTERS = 2_000


@dataclass(frozen=True, slots=True)
class SegmentRef:
    rendition: str
    duration: float
    playlist: str  # path of the media playlist that lists it
    track: int = MAIN  # sessions.playout track: main, a separate audio rendition, or text


def rendition_label(playlist_path: str, title: str) -> str:
    """The label of a media playlist: its folder inside the title, else its name (as the
    origin labels renditions)."""
    rel = playlist_path.removeprefix(f"/{title}/")
    # posixpath.dirname, written out: it is interpreted Python, on every playlist answer
    head = rel[:rel.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head or rel.removesuffix(".m3u8")


class PlaylistIndex:
    def __init__(self) -> None:
        self._playlists: OrderedDict[str, list[Segment]] = OrderedDict()
        self._segments: OrderedDict[tuple[str, int | None], SegmentRef] = OrderedDict()
        self._compiled: OrderedDict[tuple[str, str], CompiledPlaylist] = OrderedDict()
        #: what the masters say of their media playlists: path -> EXT-X-MEDIA TYPE ("audio"...)
        self._roles: OrderedDict[str, str] = OrderedDict()
        self._masters: OrderedDict[str, int] = OrderedDict()  # master path -> hash of its text
        #: path -> (rendition label, track) of a segment no playlist named
        self._fallback: Memo[str, tuple[str, int]] = Memo(MAX_SEGMENTS)

    def learn(self, path: str, title: str, text: str) -> None:
        """Index a playlist just fetched or served: a media playlist's segments, a master's
        alternative renditions (which media playlists are audio or subtitles)."""
        if playlist.kind(text) != "media":
            self._learn_master(path, text)
            return
        try:
            segments = playlist.segments(text, path)
        except InvalidMedia:
            return
        label = rendition_label(path, title)
        role = self._roles.get(path)
        self._playlists.pop(path, None)
        self._playlists[path] = segments
        while len(self._playlists) > MAX_PLAYLISTS:
            self._playlists.popitem(last=False)
        for seg in segments:
            key = (seg.path, seg.byterange[0] if seg.byterange else None)
            self._segments.pop(key, None)
            self._segments[key] = SegmentRef(label, seg.duration, path,
                                             track_of(role, seg.path))
        while len(self._segments) > MAX_SEGMENTS:
            self._segments.popitem(last=False)

    def _learn_master(self, path: str, text: str) -> None:
        digest = hash(text)
        if self._masters.get(path) == digest:
            return  # served again unchanged: nothing new to learn
        self._masters.pop(path, None)
        self._masters[path] = digest
        while len(self._masters) > MAX_MASTERS:
            self._masters.popitem(last=False)
        for media_path, role in playlist.media_roles(text, path).items():
            self._roles.pop(media_path, None)
            self._roles[media_path] = role
        while len(self._roles) > MAX_PLAYLISTS:
            self._roles.popitem(last=False)

    def playback(self, path: str, offset: int | None, kind: str) -> tuple[float | None, int]:
        """(media seconds, track) an answer for `path` carries, for the session's play-out: the
        EXTINF of a known segment, 0.0 for a segment or init section the index does not know,
        None for anything that is no segment (playlists, keys)."""
        if kind != "segment":
            return None, MAIN
        ref = self.segment(path, offset)
        if ref is None:
            return 0.0, self._unknown(path)[1]
        return ref.duration, ref.track

    def answer_facts(self, path: str, title: str, offset: int | None,
                     kind: str) -> tuple[str, float | None, int, SegmentRef | None]:
        """What accounting needs of one answer, from one lookup: (rendition label, media
        seconds, track, segment) as rendition_of, playback and segment give them."""
        if kind != "segment":
            label = self.rendition_of(path, title, offset, is_playlist=kind == "playlist")
            return label, None, MAIN, None
        ref = self.segment(path, offset)
        if ref is None:
            label, track = self._unknown(path, title)
            return label, 0.0, track, None
        return ref.rendition, ref.duration, ref.track, ref

    def knows(self, path: str) -> bool:
        """Whether the playlist at `path` has been learnt (a media playlist's segments, or a
        master's renditions): a hit on it need not read it again."""
        return path in self._playlists or path in self._masters

    def segment(self, path: str, offset: int | None) -> SegmentRef | None:
        return self._segments.get((path, offset)) or (
            self._segments.get((path, None)) if offset is not None else None)

    def rendition_of(self, path: str, title: str, offset: int | None, *,
                     is_playlist: bool) -> str:
        if is_playlist:
            return rendition_label(path, title) if path in self._playlists else "none"
        ref = self.segment(path, offset)
        if ref is not None:
            return ref.rendition
        return self._unknown(path, title)[0]

    def _unknown(self, path: str, title: str = "") -> tuple[str, int]:
        """(rendition label, track) of a segment no playlist named: its folder, its extension
        (worked out once per path)."""
        found = self._fallback.get(path)
        if found is None:
            rel = path.removeprefix(f"/{title}/") if title else path.split("/", 2)[-1]
            found = (posixpath.basename(posixpath.dirname(rel)) or "none", track_of(None, path))
            self._fallback.put(path, found)
        return found

    def next_segments(self, path: str, byterange: tuple[int, int] | None,
                      n: int) -> list[Segment]:
        ref = self.segment(path, byterange[0] if byterange else None)
        if ref is None or n <= 0:
            return []
        segments = self._playlists.get(ref.playlist, [])
        return playlist.next_segments(segments, path, byterange, n)

    def compiled(self, key: str, version: str, text: bytes) -> CompiledPlaylist:
        """The compiled form of one stored playlist version (compiled once, reused)."""
        ident = (key, version)
        found = self._compiled.get(ident)
        if found is None:
            found = CompiledPlaylist.compile(text.decode("utf-8", "replace"))
            self._compiled[ident] = found
            while len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        return found
