"""Classify a request path by its file extension: the Content-Type to send and the metric `kind`.

The table is the content rule of docs/HTTP.md, "What the origin serves": the origin serves only
these extensions, and `edge360_requests_total{kind}` uses the kinds. The edge proxies any path, so
`kind_of` never fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PLAYLIST: Final = "playlist"
SEGMENT: Final = "segment"
OTHER: Final = "other"


@dataclass(frozen=True, slots=True)
class MediaType:
    """What the origin sends for a servable file: its Content-Type and its metric kind."""

    content_type: str
    kind: str  # "playlist", "segment" or "other"


# RFC 8216 §4 names application/vnd.apple.mpegurl for playlists; the segment types follow the
# container (MPEG-TS, fragmented MP4, packed audio, WebVTT); keys are opaque bytes.
_TABLE: Final[dict[str, MediaType]] = {
    ".m3u8": MediaType("application/vnd.apple.mpegurl", PLAYLIST),
    ".ts": MediaType("video/mp2t", SEGMENT),
    ".m4s": MediaType("video/mp4", SEGMENT),
    ".mp4": MediaType("video/mp4", SEGMENT),
    ".m4a": MediaType("audio/mp4", SEGMENT),
    ".aac": MediaType("audio/aac", SEGMENT),
    ".vtt": MediaType("text/vtt", SEGMENT),
    ".key": MediaType("application/octet-stream", OTHER),
}


def _extension(path: str) -> str:
    """The lower-cased extension of the last path segment ("" when it has none)."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    # A leading dot (".m3u8") is a hidden name, not an extension.
    if dot <= 0:
        return ""
    return name[dot:].lower()


def media_type(path: str) -> MediaType | None:
    """The MediaType for `path` by extension (case-insensitive); None means: do not serve it."""
    return _TABLE.get(_extension(path))


#: kinds of paths asked recently (every request asks once): emptied whole when it fills
_KINDS: dict[str, str] = {}
_MAX_KINDS = 65_536


def kind_of(path: str) -> str:
    """The metric kind of any path: "playlist", "segment", else "other"."""
    kind = _KINDS.get(path)
    if kind is None:
        found = _TABLE.get(_extension(path))
        kind = found.kind if found is not None else OTHER
        if len(_KINDS) >= _MAX_KINDS:
            _KINDS.clear()
        _KINDS[path] = kind
    return kind
