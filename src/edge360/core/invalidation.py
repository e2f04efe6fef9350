"""What a successful unsafe request invalidates in a shared cache (RFC 9111 §4.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urljoin, urlsplit

#: RFC 9110 §9.2.1: methods defined as safe; any other method is unsafe.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidates(method: str, status: int) -> bool:
    """§4.4: a non-error (2xx or 3xx) answer to an unsafe method invalidates stored responses."""
    return method.upper() not in SAFE_METHODS and 200 <= status < 400


def _authority(netloc: str) -> str:
    host = netloc.lower().rsplit("@", 1)[-1]
    for default in (":80", ":443"):
        if host.endswith(default):
            return host[: -len(default)]
    return host


def invalidated_paths(request_path: str, response_headers: Mapping[str, str],
                      host: str) -> list[str]:
    """The paths (with query) an invalidating answer invalidates (§4.4): the target, and the
    Location and Content-Location targets when on the same host (others are never touched, so
    one origin cannot evict another's content)."""
    out = [request_path]
    base = f"http://{host}{request_path if request_path.startswith('/') else '/'}"
    for name in ("location", "content-location"):
        ref = response_headers.get(name, "").strip(" \t")
        if not ref:
            continue
        try:
            url = urlsplit(urljoin(base, ref))
        except ValueError:
            continue  # e.g. a malformed IPv6 literal: no target to invalidate
        if url.scheme in ("http", "https") and _authority(url.netloc) == _authority(host):
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            if path not in out:
                out.append(path)
    return out
