"""Request paths made safe: no request may name a file outside the media root.

`split_request_path` turns the still-percent-encoded path of the request line into decoded segments
and refuses everything that could climb out of a directory or alias another name: dot segments in
any encoding, encoded slashes, backslashes, NUL and other control characters, double encoding, and
bytes that are not UTF-8 (overlong forms such as %c0%af for "/" included). `is_inside` is the last
check after the filesystem has resolved symlinks.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Final
from urllib.parse import unquote_to_bytes

from edge360.core.errors import BadRequest, Edge360Error, NotFound
from edge360.core.lru import Memo

# RFC 3986 §2.1: a "%" must be followed by two hex digits. After one decode, such a triplet means
# the client encoded twice (%252e -> %2e): refused, so no later layer can decode it again.
_PCT_TRIPLET: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _has_control(text: str) -> bool:
    """Whether `text` holds a control character (C0, DEL or C1)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def _segment(raw: str) -> str:
    """Decode one raw segment and check it; raise BadRequest/NotFound when it is not acceptable."""
    if not raw:
        raise BadRequest("empty path segment")
    if _BAD_PERCENT.search(raw):
        raise BadRequest("malformed percent-encoding")
    try:
        # RFC 3986 §2.5: percent-encoded octets of a path are UTF-8; strict decoding also refuses
        # overlong forms (%c0%af) and surrogates smuggled in through the request line.
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:
        raise BadRequest("path is not UTF-8") from None
    if "/" in name:
        raise BadRequest("encoded slash in path")
    if "\\" in name:
        raise BadRequest("backslash in path")
    if _has_control(name):
        raise BadRequest("control character in path")
    if _PCT_TRIPLET.search(name):
        raise BadRequest("double percent-encoding in path")
    if name in (".", ".."):
        # RFC 3986 §5.2.4 would remove dot segments; we refuse them so no path has two spellings.
        raise BadRequest("dot segment in path")
    if name.startswith("."):
        raise NotFound("hidden path")
    return name


def split_request_path(raw_path: str, *, max_length: int = 1024) -> tuple[str, ...]:
    """The decoded segments of a raw request path: "/demo/v0/seg_001.ts" -> ("demo", "v0", ...).

    `raw_path` is the path of the request line, still percent-encoded, without the query. "/" gives
    (). Raises BadRequest for anything unsafe or ambiguous and NotFound for a hidden segment.
    """
    if len(raw_path) > max_length:
        raise BadRequest("path too long")
    if not raw_path.startswith("/"):
        raise BadRequest("path must start with /")
    # Checked on the raw text too, so a NUL or backslash is refused even in a segment that would
    # otherwise fail later for another reason; the decoded checks catch the encoded forms.
    if "\x00" in raw_path or "\\" in raw_path:
        raise BadRequest("NUL or backslash in path")
    if raw_path == "/":
        return ()
    return tuple(_segment(raw) for raw in raw_path[1:].split("/"))


def is_inside(root: str, candidate: str) -> bool:
    """True when `candidate` is `root` or below it. Both should be absolute realpath() results;
    they are normalised again so a stray ".." cannot pass, and compared by whole segments so
    /media2 is not inside /media."""
    if not (root.startswith("/") and candidate.startswith("/")):
        return False
    root, candidate = posixpath.normpath(root), posixpath.normpath(candidate)
    if candidate == root:
        return True
    prefix = root if root.endswith("/") else root + "/"
    return candidate.startswith(prefix)


#: paths longer than this are checked every time rather than remembered
MAX_REMEMBERED: Final = 512


class CheckedPaths:
    """split_request_path with its answers remembered (a bounded LRU): a path asked again costs a
    dict lookup. A refused path is remembered as its refusal and raised again."""

    __slots__ = ("_seen", "max_length")

    def __init__(self, max_length: int, limit: int = 4096) -> None:
        self.max_length = max_length
        self._seen: Memo[str, tuple[str, ...] | Edge360Error] = Memo(limit)

    def __call__(self, raw_path: str) -> tuple[str, ...]:
        found = self._seen.get(raw_path)
        if found is None:
            try:
                found = split_request_path(raw_path, max_length=self.max_length)
            except (BadRequest, NotFound) as e:
                found = e
            if len(raw_path) <= MAX_REMEMBERED:  # long paths are rare: not worth the memory
                self._seen.put(raw_path, found)
        if isinstance(found, Edge360Error):
            raise type(found)(str(found))
        return found
