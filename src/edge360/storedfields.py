"""Header fields as a shared cache stores them (RFC 9111 §3.1) and updates them from a 304 (§3.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from edge360.cachecontrol import split_list

#: §3.1: hop-by-hop fields are never stored (plus those a Connection field lists).
HOP_BY_HOP: Final = frozenset({"connection", "proxy-connection", "keep-alive", "te", "trailer",
                               "transfer-encoding", "upgrade"})
#: §3.2: fields a 304 never updates: the length, and Content-Range that belongs to a 206's body.
_NOT_UPDATED: Final = frozenset({"content-length", "content-range"})


def stored_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The fields of a response as stored: without hop-by-hop fields (§3.1)."""
    listed = {n.lower() for n in split_list(headers.get("connection", ""))}
    return {k: v for k, v in headers.items() if k not in HOP_BY_HOP and k not in listed}


def merge_304(stored: Mapping[str, str], response_headers: Mapping[str, str]) -> dict[str, str]:
    """Stored fields updated from a 304 or HEAD (§3.2): each received field replaces the stored
    one, except hop-by-hop fields, Content-Length and Content-Range; stored 1xx warnings, which
    describe the old freshness, are dropped (RFC 7234 §4.3.4)."""
    out = dict(stored)
    if "warning" in out:
        kept = [w for w in split_list(out["warning"]) if not w.startswith("1")]
        if kept:
            out["warning"] = ", ".join(kept)
        else:
            del out["warning"]
    for name, value in stored_fields(response_headers).items():
        if name not in _NOT_UPDATED:
            out[name] = value
    return out
