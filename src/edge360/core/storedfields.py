"""Header fields as a shared cache stores them (RFC 9111 §3.1) and updates them from a 304 (§3.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from edge360.core.cachecontrol import split_list

#: §3.1: hop-by-hop fields are never stored (plus those a Connection field lists).
HOP_BY_HOP: Final = frozenset({"connection", "proxy-connection", "keep-alive", "te", "trailer",
                               "transfer-encoding", "upgrade"})
#: §3.2: fields a 304 never updates: the length, Content-Range that belongs to a 206's body, and
#: the coding and digest of the stored bytes (§3.2 lets a cache keep the fields "necessary to
#: assure integrity of the stored response": a 304 naming another coding would mislabel them).
_NOT_UPDATED: Final = frozenset({"content-length", "content-range", "content-encoding",
                                 "content-md5"})


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


#: request fields never passed on as the client sent them: hop-by-hop and framing (RFC 9110
#: §7.6.1), and those the edge writes itself for the exchange it makes (its own Via/CDN-Loop,
#: identity coding for the raw bytes it stores, the range and validators of its own fetch:
#: client preconditions are evaluated here, against the stored or complete response)
_NOT_FORWARDED: Final = HOP_BY_HOP | frozenset({
    "host", "content-length", "expect", "via", "cdn-loop", "accept-encoding", "range",
    "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"})


#: the cookie that carries a viewer's admission ticket (docs/OVERLOAD.md, "Tickets")
TICKET_COOKIE: Final = "edge360_ticket"


def forwarded_request_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's end-to-end request fields a cache passes on when it goes upstream (RFC 9110
    §7.6: an intermediary forwards the fields it does not consume). CMCD fields and the
    admission ticket cookie carry viewer data that never leaves the edge (docs/HTTP.md,
    "Tiers")."""
    listed = {n.lower() for n in split_list(headers.get("connection", ""))}
    out = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED and k not in listed
           and not k.startswith("cmcd")}
    cookie = out.get("cookie")
    if cookie is not None and TICKET_COOKIE in cookie:
        kept = without_ticket_cookie(cookie)
        if kept:
            out["cookie"] = kept
        else:
            del out["cookie"]
    return out


def without_ticket_cookie(header: str) -> str:
    """A Cookie field (RFC 6265 §5.4: "name=value" pairs separated by ";") without the
    admission ticket."""
    return "; ".join(p.strip() for p in header.split(";")
                     if p.strip() and p.strip().partition("=")[0] != TICKET_COOKIE)
