"""What the edge asks its parents for (Target) and how an upstream answer becomes a stored
object's head (new_object): its RFC 9111 stored response, with the edge's per-kind default
lifetimes for HLS media and playlists, and a fresh version for its body."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from edge360.config.schema import EdgeConfig
from edge360.core import policy
from edge360.core.kinds import kind_of
from edge360.edge.stored import StoredObject, new_version
from edge360.hls import playlist
from edge360.sessions.viewer import VIEWER_PARAMS

#: fields describing one byte range of a body, never stored as the object's own (RFC 9110 §14.4)
_RANGE_FIELDS: Final = ("content-range", "content-length")


@dataclass(slots=True)
class Target:
    """One object as the edge asks its parent for it."""

    key: str  # cache key: path + the key params (sorted)
    path: str  # path without query: parent choice (one parent per file), kind, title
    upstream: str  # path + forwarded query (never sid, token or CMCD)
    kind: str  # "playlist", "segment", "other"
    title: str
    request_headers: dict[str, str]  # the client's, lower-cased (Vary, no-store, Authorization)
    cdn_loop: str | None

    def __init__(self, key: str, path: str, upstream: str, kind: str, title: str,
                 request_headers: dict[str, str], cdn_loop: str | None) -> None:
        # written out, not generated: in a compiled module the dataclass-made __init__ would
        # stay interpreted Python, on every content request (docs/ARCHITECTURE.md)
        self.key, self.path, self.upstream, self.kind = key, path, upstream, kind
        self.title, self.request_headers, self.cdn_loop = title, request_headers, cdn_loop

    @classmethod
    def of(cls, key: str, path: str, title: str, request_headers: dict[str, str] | None = None,
           cdn_loop: str | None = None, kind: str | None = None) -> Target:
        """The target of the object cached under `key` (`path`, then "?" and the key params when
        there are any): the parent is asked for exactly that, so a viewer's sid, token or CMCD
        never goes upstream. Without request headers it describes an object no client field
        steers (a hit, a prefetch, a warm-up)."""
        query = key[len(path) + 1:] if len(key) > len(path) else ""
        # Target, not cls, and positional: compiled, a direct call rather than a generic call
        # with keywords through the class object (the class has no subclasses)
        return Target(key, path, path + "?" + query if query else path,
                      kind_of(path) if kind is None else kind, title,
                      {} if request_headers is None else request_headers, cdn_loop)


def new_object(config: EdgeConfig, t: Target, headers: dict[str, str], request_time: float,
               response_time: float, length: int, body: bytes, *, status: int = 200,
               pieced: bool | None = None) -> StoredObject:
    """The head of a stored object made from an upstream answer (RFC 9111 §3, §4.2), under a
    new version. `pieced` defaults to "longer than one piece"."""
    default_ttl: float | None = None
    cap = policy.DEFAULT_HEURISTIC_CAP
    if status != 200:
        pass  # the per-kind TTLs are for media and playlists, never for other answers
    elif t.kind == "segment":
        default_ttl = config.segment_ttl
    elif t.kind == "playlist":
        text = body.decode("utf-8", "replace")
        media_vod = playlist.kind(text) == "media" and playlist.is_vod(text)
        # RFC 8216 §6.2.2: a live playlist changes every target duration, so its heuristic
        # lifetime is capped too; a VOD media playlist never changes.
        default_ttl = config.segment_ttl if media_vod else config.playlist_ttl
        cap = policy.DEFAULT_HEURISTIC_CAP if media_vod else float(config.playlist_ttl)
    fields = {k: v for k, v in headers.items() if k not in _RANGE_FIELDS}
    fields["content-length"] = str(length)
    stored = policy.StoredResponse.from_response(
        status, fields, request_time=request_time, response_time=response_time,
        request_headers=t.request_headers, default_ttl=default_ttl, heuristic_cap=cap)
    obj = StoredObject(stored, length, length > config.piece_bytes, new_version(),
                       config.piece_bytes)
    return obj if pieced is None else dataclasses.replace(obj, pieced=pieced)


def cache_key(path: str, query: list[tuple[str, str]], key_params: tuple[str, ...]) -> str:
    """Path plus the key params, sorted; "*" = all but sid, token and CMCD (never in a key)."""
    if not query or not key_params:
        return path
    items = [(k, v) for k, v in query if k not in VIEWER_PARAMS
             and (key_params == ("*",) or k in key_params)]
    return path + ("?" + urlencode(sorted(items)) if items else "")


def range_offset(header: str) -> int | None:
    """The first byte of a single `bytes=a-b` request (names the byte-range segment)."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first = header[6:].split("-", 1)[0].strip()
    return int(first) if first.isdigit() else None
