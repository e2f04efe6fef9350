"""A playlist rendered for one viewer, finished the same way by both roles: sent private when it
carries the viewer's ids (a shared cache downstream must never hand one viewer's sid to another),
with an ETag of its own, `Vary: Accept-Encoding`, and gzip when the client accepts it."""

from __future__ import annotations

import functools
import gzip
import hashlib
from typing import Final

#: playlists at least this big are gzipped for clients that accept it
COMPRESS_MIN: Final = 1024


def gzip_accepted(accept_encoding: str, has_range: bool) -> bool:
    """Whether a playlist may go out gzipped (never for a range of it: ranges count raw bytes)."""
    return "gzip" in accept_encoding and not has_range


@functools.lru_cache(maxsize=256)
def _private(cache_control: str) -> str:
    """`cache_control` for one viewer's copy: private, without public or s-maxage (remembered:
    a title's playlists share a few values)."""
    rest = ", ".join(p.strip() for p in cache_control.split(",") if p.strip().lower() not in
                     ("public", "private", "") and not p.strip().lower().startswith("s-maxage"))
    return "private" + (f", {rest}" if rest else "")


@functools.lru_cache(maxsize=4096)
def _digest(params: str) -> str:
    """The ETag suffix of one viewer's copy (remembered: a viewer asks again and again)."""
    return hashlib.blake2b(params.encode(), digest_size=6).hexdigest()


def personalize(body: bytes, params: str, headers: dict[str, str], etag: str | None,
                gzip_ok: bool) -> tuple[bytes, str | None]:
    """Finish a playlist already rendered for one viewer (`params`: its sid/token query):
    `headers` get the private Cache-Control, Vary and Content-Encoding; returns the body and its
    ETag."""
    if params:
        headers["Cache-Control"] = _private(headers.get("Cache-Control", ""))
        digest = _digest(params)
        etag = f'{etag[:-1]}-{digest}"' if etag and etag.endswith('"') else etag
    headers["Vary"] = "Accept-Encoding"
    if gzip_ok and len(body) >= COMPRESS_MIN:
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
        etag = f'{etag[:-1]}-gz"' if etag and etag.endswith('"') else etag
    return body, etag
