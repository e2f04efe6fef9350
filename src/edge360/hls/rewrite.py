"""Per-viewer playlists: a playlist compiled once into literal chunks and URI slots, so each
viewer's copy is one bytes.join with its sid/token query on every URI the player fetches.

Which URIs get the query is playlist's scan (RFC 8216 §4.1 lines, the URI attributes of the tags
in playlist.URI_TAGS); which query names belong to one viewer (never copied from an upstream URI
into another viewer's copy) is viewerrules.VIEWER_PARAMS.
"""

from __future__ import annotations

import re

from edge360.core.errors import BadRequest
from edge360.hls.playlist import is_absolute, uri_spans
from edge360.sessions.viewer import VIEWER_PARAMS

# params are inserted verbatim into URI lines and quoted attributes: no quote, space, #, or newline
_SAFE_PARAMS_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*")


def _clean_query(query: str) -> str:
    """The query without viewer parameters (sid, token, CMCD) an upstream may have left in."""
    return "&".join(p for p in query.split("&") if p.split("=", 1)[0] not in VIEWER_PARAMS)


class CompiledPlaylist:
    """A playlist split once into literal chunks and URI slots, so that each viewer's copy is one
    bytes.join: chunk0 + params + chunk1 + params + ... . Absolute URIs (scheme or //host) are left
    alone: they may be data:/skd: key URIs or another host that must not learn the viewer's sid."""

    __slots__ = ("_chunks", "_plain", "slots")

    def __init__(self, chunks: list[bytes], plain: bytes) -> None:
        self._chunks = chunks
        self._plain = plain
        #: how many URIs get the params
        self.slots = len(chunks) - 1

    @classmethod
    def compile(cls, text: str) -> CompiledPlaylist:
        chunks: list[str] = []
        current: list[str] = []
        removed = False  # whether a viewer parameter was dropped: then render("") differs
        lines = text.split("\n")
        for index, raw in enumerate(lines):
            line = raw.rstrip("\r")
            pos = 0
            for start, end in uri_spans(line):
                uri = line[start:end]
                if is_absolute(uri):
                    continue
                base, hashmark, fragment = uri.partition("#")
                path, question, query = base.partition("?")
                cleaned = _clean_query(query) if question else ""
                removed = removed or cleaned != query
                query = cleaned
                current.append(line[pos:start] + path + ("?" + query + "&" if query else "?"))
                chunks.append("".join(current))
                current = [hashmark + fragment]
                pos = end
            current.append(line[pos:] + raw[len(line):])
            if index < len(lines) - 1:
                current.append("\n")
        chunks.append("".join(current))
        if removed:
            plain = "".join(c[:-1] if i < len(chunks) - 1 else c for i, c in enumerate(chunks))
        else:
            plain = text
        return cls([c.encode() for c in chunks], plain.encode())

    def render(self, params: str) -> bytes:
        """The playlist with `params` (an encoded query such as "sid=abc&token=x") on every URI."""
        if not params:
            return self._plain
        if _SAFE_PARAMS_RE.fullmatch(params) is None:
            raise BadRequest("session parameters carry characters a playlist cannot hold")
        return params.encode().join(self._chunks)
