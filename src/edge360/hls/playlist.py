"""HLS playlist text: parse (m3u8, for validation) and scan (fast, for the edge and the rewrite).

This is the only module that imports m3u8. m3u8 is thorough but slow, so it is used where a title
is checked once (`parse_master`, `parse_media`); the per-request work (`segments`, `escapes_title`,
the `uri_spans` that playlistrewrite fills per viewer) is a line scanner that follows RFC 8216
§4.1: a playlist is lines, each a URI, a blank, or a tag/comment starting with "#".
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import m3u8

from edge360.core.errors import InvalidMedia

Kind = Literal["master", "media"]

#: tags whose URI="..." attribute names a resource the player fetches (RFC 8216 §4.3.2.4, 4.3.2.5,
#: 4.3.4.1, 4.3.4.3, 4.3.4.4, 4.3.4.5 and the low-latency additions of RFC 8216bis).
URI_TAGS = frozenset({
    "#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF", "#EXT-X-MAP", "#EXT-X-KEY", "#EXT-X-SESSION-KEY",
    "#EXT-X-PART", "#EXT-X-PRELOAD-HINT", "#EXT-X-RENDITION-REPORT", "#EXT-X-SESSION-DATA",
})
#: tags that appear only in a master playlist (RFC 8216 §4.3.4)
_MASTER_TAGS = ("#EXT-X-STREAM-INF", "#EXT-X-I-FRAME-STREAM-INF", "#EXT-X-MEDIA:",
                "#EXT-X-SESSION-DATA", "#EXT-X-SESSION-KEY")

# An attribute list is AttributeName=AttributeValue pairs separated by commas; a quoted-string may
# contain commas but never a double quote (RFC 8216 §4.2), so this tokenizer never splits in one.
_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^,\r\n]*)')
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BYTERANGE_RE = re.compile(r"\s*(\d+)(?:@(\d+))?\s*")


@dataclass(frozen=True, slots=True)
class Segment:
    """One media segment: `path` is its URI resolved against the playlist (query dropped)."""

    path: str
    duration: float
    byterange: tuple[int, int] | None = None  # (offset, length), implicit offsets resolved
    init_path: str | None = None  # EXT-X-MAP in force for this segment
    init_range: tuple[int, int] | None = None


# ---------------------------------------------------------------- line scanning (fast, no m3u8)

def _lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n")]


def kind(text: str) -> Kind:
    """"master" when a master-only tag is present (RFC 8216 §4.3.4), else "media"."""
    for line in _lines(text):
        if line.startswith(_MASTER_TAGS):
            return "master"
        if line.startswith(("#EXTINF", "#EXT-X-TARGETDURATION")):
            return "media"
    return "media"


def is_vod(text: str) -> bool:
    """True when no more segments will be added: EXT-X-ENDLIST or PLAYLIST-TYPE VOD (§4.3.3.4/5)."""
    for line in _lines(text):
        if line == "#EXT-X-ENDLIST" or line.replace(" ", "") == "#EXT-X-PLAYLIST-TYPE:VOD":
            return True
    return False


def target_duration(text: str) -> float | None:
    """EXT-X-TARGETDURATION in seconds (§4.3.3.1), None when absent or unreadable."""
    for line in _lines(text):
        if line.startswith("#EXT-X-TARGETDURATION:"):
            try:
                return float(line.partition(":")[2].strip())
            except ValueError:
                return None
    return None


def attributes(line: str) -> Iterator[tuple[str, str, int, int]]:
    """(name, value, start, end) of each attribute of a tag line; quotes kept, span of the value."""
    colon = line.find(":")
    if colon < 0:
        return
    pos = colon + 1
    while pos < len(line):
        m = _ATTR_RE.match(line, pos)
        if m is None:
            return
        yield m.group(1), m.group(2), m.start(2), m.end(2)
        pos = m.end()
        if pos < len(line) and line[pos] == ",":
            pos += 1
        else:
            return


def _tag_name(line: str) -> str:
    return line.split(":", 1)[0]


def uri_spans(line: str) -> Iterator[tuple[int, int]]:
    """Spans of the URIs a line carries: the whole line, or the inside of a URI="..." attribute."""
    if not line or line.isspace():
        return
    if not line.startswith("#"):
        yield 0, len(line)
    elif _tag_name(line) in URI_TAGS:
        for name, value, start, end in attributes(line):
            if name == "URI" and len(value) >= 2 and value[0] == '"':
                yield start + 1, end - 1


def uris(text: str) -> Iterator[str]:
    """Every URI the playlist references, in order."""
    for line in _lines(text):
        for start, end in uri_spans(line):
            yield line[start:end]


def is_absolute(uri: str) -> bool:
    """A URI with a scheme (http:, data:, skd:) or a network path (//host), RFC 3986 §4.2."""
    return uri.startswith("//") or _SCHEME_RE.match(uri) is not None


def resolve(base_path: str, uri: str) -> str | None:
    """`uri` resolved against the playlist at `base_path` (RFC 3986 §5.2), query and fragment
    dropped; None for an absolute URI. Percent-encoding is kept: it is what the player requests."""
    if is_absolute(uri):
        return None
    path = uri.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        path = posixpath.dirname(base_path) + "/" + path
    return posixpath.normpath(path) if path else path


def escapes_title(text: str, playlist_path: str, title: str) -> bool:
    """True if any URI is absolute or resolves outside /<title>/ (a hostile upstream playlist)."""
    prefix = f"/{title}/"
    for uri in uris(text):
        if is_absolute(uri) or "\\" in uri:
            return True
        for candidate in (uri, unquote(uri)):
            resolved = resolve(playlist_path, candidate)
            if resolved is None or not (resolved + "/").startswith(prefix):
                return True
    return False


def parse_byterange(value: str) -> tuple[int, int | None]:
    """(length, offset or None) of "<n>[@<o>]" (RFC 8216 §4.3.2.2)."""
    m = _BYTERANGE_RE.fullmatch(value)
    if m is None:
        raise InvalidMedia(f"malformed byte range {value!r}")
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


class _RangeChain:
    """Resolves implicit EXT-X-BYTERANGE offsets: a missing offset starts right after the previous
    segment's sub-range, which must be of the same resource (RFC 8216 §4.3.2.2)."""

    __slots__ = ("last_end", "last_path")

    def __init__(self) -> None:
        self.last_path: str | None = None
        self.last_end = 0

    def next(self, path: str, value: str | None) -> tuple[int, int] | None:
        if value is None:
            self.last_path = None
            return None
        length, offset = parse_byterange(value)
        if offset is None:
            if self.last_path != path:
                raise InvalidMedia(f"{path}: EXT-X-BYTERANGE without offset does not follow a "
                                   "sub-range of the same resource")
            offset = self.last_end
        self.last_path, self.last_end = path, offset + length
        return offset, length


def _init_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    length, offset = parse_byterange(value)
    return (offset or 0), length


def segments(text: str, base_path: str) -> list[Segment]:
    """The media segments of a media playlist, URIs resolved against `base_path` (absolute URIs
    are skipped: they are not ours). Raises InvalidMedia on a malformed or dangling byte range."""
    out: list[Segment] = []
    chain = _RangeChain()
    duration = 0.0
    pending_range: str | None = None
    init_path: str | None = None
    init_range: tuple[int, int] | None = None
    for line in _lines(text):
        if not line or line.isspace():
            continue
        if line.startswith("#"):
            if line.startswith("#EXTINF:"):
                try:
                    duration = float(line[8:].split(",", 1)[0])
                except ValueError:
                    raise InvalidMedia(f"malformed {line!r}") from None
            elif line.startswith("#EXT-X-BYTERANGE:"):
                pending_range = line[17:]
            elif line.startswith("#EXT-X-MAP:"):
                attrs = {n: v.strip('"') for n, v, _s, _e in attributes(line)}
                init_path = resolve(base_path, attrs.get("URI", ""))
                init_range = _init_range(attrs.get("BYTERANGE"))
            continue
        path = resolve(base_path, line)
        key = path if path is not None else line
        byterange = chain.next(key, pending_range)
        if path is not None:
            out.append(Segment(path, duration, byterange, init_path, init_range))
        duration, pending_range = 0.0, None
    return out


def media_roles(text: str, base_path: str) -> dict[str, str]:
    """The playlists a master names in EXT-X-MEDIA (RFC 8216 §4.3.4.1), resolved against the
    master at `base_path`, each with its TYPE lower-cased ("audio", "subtitles", ...)."""
    out: dict[str, str] = {}
    for line in _lines(text):
        if line.startswith("#EXT-X-MEDIA:"):
            attrs = {n: v.strip('"') for n, v, _s, _e in attributes(line)}
            path = resolve(base_path, attrs.get("URI", "")) if attrs.get("URI") else None
            if path and attrs.get("TYPE"):
                out[path] = attrs["TYPE"].lower()
    return out


def next_segments(segments: list[Segment], path: str, byterange: tuple[int, int] | None,
                  n: int) -> list[Segment]:
    """The `n` segments after the one at `path` (and `byterange`, matched on its offset when the
    lengths differ); [] when the request is not a segment of this playlist."""
    fallback = -1
    for i, seg in enumerate(segments):
        if seg.path != path:
            continue
        if seg.byterange == byterange:
            return segments[i + 1:i + 1 + n]
        if fallback < 0 and byterange and seg.byterange and seg.byterange[0] == byterange[0]:
            fallback = i
    return segments[fallback + 1:fallback + 1 + n] if fallback >= 0 else []


def byterange_boundaries(segments: Iterable[Segment]) -> dict[str, list[int]]:
    """For each resource addressed by byte ranges: the sorted offsets where its sub-ranges (and its
    EXT-X-MAP initialization section) start, so cache pieces can be cut there."""
    found: dict[str, set[int]] = {}
    for seg in segments:
        if seg.byterange is not None:
            found.setdefault(seg.path, set()).add(seg.byterange[0])
        if seg.init_path is not None and seg.init_range is not None:
            found.setdefault(seg.init_path, set()).add(seg.init_range[0])
    return {path: sorted(offsets) for path, offsets in found.items()}


# ---------------------------------------------------------------- m3u8 parsing (validation)

@dataclass(frozen=True, slots=True)
class Variant:
    """A playlist a master references: a variant stream, an I-frame stream or an EXT-X-MEDIA
    rendition (`role` is "variant", "iframe" or the media TYPE lower-cased, e.g. "audio")."""

    uri: str
    role: str
    bandwidth: int | None = None
    average_bandwidth: int | None = None
    resolution: tuple[int, int] | None = None
    codecs: str | None = None
    frame_rate: float | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    variants: tuple[Variant, ...]
    other_uris: tuple[str, ...]  # session keys and session data


@dataclass(frozen=True, slots=True)
class Reference:
    """A resource a media playlist needs besides its segments (init section, key, part)."""

    uri: str
    byterange: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration: float | None
    vod: bool
    segments: tuple[Segment, ...]  # `path` is the URI as written (query and fragment dropped)
    references: tuple[Reference, ...]


def _loads(text: str) -> Any:
    if not text.lstrip("\ufeff").startswith("#EXTM3U"):
        raise InvalidMedia("does not start with #EXTM3U (RFC 8216 §4.3.1.1)")
    try:
        return m3u8.loads(text)
    except Exception as e:  # m3u8 raises ValueError, ParseError, IndexError... on bad input
        raise InvalidMedia(f"unparsable playlist: {e}") from None


def _stream(uri: str, role: str, info: Any) -> Variant:
    res = info.resolution
    return Variant(uri=uri, role=role, bandwidth=info.bandwidth,
                   average_bandwidth=info.average_bandwidth,
                   resolution=(int(res[0]), int(res[1])) if res else None, codecs=info.codecs,
                   frame_rate=float(info.frame_rate) if info.frame_rate else None)


def parse_master(text: str) -> MasterPlaylist:
    """The variants, I-frame streams and renditions of a master playlist (via m3u8)."""
    m = _loads(text)
    variants = [_stream(p.uri, "variant", p.stream_info) for p in m.playlists]
    variants += [_stream(p.uri, "iframe", p.iframe_stream_info) for p in m.iframe_playlists]
    variants += [Variant(uri=x.uri, role=(x.type or "media").lower(), name=x.name)
                 for x in m.media if x.uri]
    for v in variants:
        if not v.uri:
            raise InvalidMedia("a variant has no URI")
    others = [k.uri for k in m.session_keys if k and k.uri]
    others += [d.uri for d in m.session_data if d.uri]
    return MasterPlaylist(tuple(variants), tuple(others))


def parse_media(text: str) -> MediaPlaylist:
    """Segments (implicit byte-range offsets resolved), init sections and keys (via m3u8)."""
    m = _loads(text)
    if m.is_variant:
        raise InvalidMedia("a master playlist where a media playlist was expected")
    chain = _RangeChain()
    segs: list[Segment] = []
    refs: dict[tuple[str, tuple[int, int] | None], None] = {}
    for s in m.segments:
        path = s.uri.split("#", 1)[0].split("?", 1)[0]
        init = s.init_section
        init_uri = init.uri if init is not None else None
        init_range = _init_range(init.byterange) if init is not None else None
        if init_uri:
            refs[(init_uri, init_range)] = None
        if s.key is not None and s.key.uri:
            refs[(s.key.uri, None)] = None
        for part in s.parts or ():
            refs[(part.uri, None)] = None
        segs.append(Segment(path, float(s.duration or 0.0), chain.next(path, s.byterange),
                            init_uri, init_range))
    vod = bool(m.is_endlist) or (m.playlist_type or "").lower() == "vod"
    td = float(m.target_duration) if m.target_duration is not None else None
    return MediaPlaylist(td, vod, tuple(segs), tuple(Reference(u, r) for u, r in refs))
