"""Who a request belongs to: session ids (the `sid` query, CMCD `sid`), and the fallback key of
address + User-Agent for clients that carry neither (docs/SESSIONS.md)."""

from __future__ import annotations

import base64
import hashlib
import secrets

from edge360.sessions import cmcd


def valid_sid(s: str | None) -> bool:
    """True when `s` may be a session id: [A-Za-z0-9_-]{8,64} (checked without a regular
    expression's match object, nor a scan of a set of characters per character: this runs on
    every content request; isalnum is exactly [A-Za-z0-9] on ASCII)."""
    return (s is not None and 8 <= len(s) <= 64 and s.isascii()
            and s.replace("-", "a").replace("_", "a").isalnum())


def new_sid() -> str:
    """A fresh random session id: 22 URL-safe characters (128 bits)."""
    return secrets.token_urlsafe(16)


def cmcd_sid(value: str | None) -> str | None:
    """The `sid` of a CMCD query value (already URL-decoded) or CMCD-Session header, if valid.
    `sid` is a String (CTA-5004 §3.3): only the quoted form counts; the first `sid` decides."""
    for key, raw in cmcd.pairs(value):
        if key == "sid":
            sid = cmcd.string(raw)
            return sid if valid_sid(sid) else None
    return None


def fallback_key(address: str, user_agent: str) -> str:
    """A short fixed-size key for address + User-Agent. It starts with "~", which no sid can, so a
    client cannot claim another's fallback session by sending it as a sid."""
    digest = hashlib.blake2b(f"{address}\0{user_agent}".encode(errors="replace"),
                             digest_size=12).digest()
    return "~" + base64.urlsafe_b64encode(digest).decode()


def explicit_sid(query_sid: str | None, cmcd_query: str | None,
                 cmcd_header: str | None) -> str | None:
    """The session id a request carries, by the precedence of docs/SESSIONS.md: `sid` query >
    CMCD query sid > CMCD-Session header sid; invalid ids count as absent. None: it carries none."""
    if valid_sid(query_sid):
        return query_sid
    for value in (cmcd_query, cmcd_header):
        sid = cmcd_sid(value)
        if sid is not None:
            return sid
    return None


def identity(query_sid: str | None, cmcd_query: str | None, cmcd_header: str | None,
             address: str, user_agent: str) -> tuple[str, bool]:
    """(session key, explicit): the id the request carries (explicit_sid), else address +
    User-Agent. `explicit` is False for the fallback key, which must never be written into a
    playlist."""
    sid = explicit_sid(query_sid, cmcd_query, cmcd_header)
    if sid is not None:
        return sid, True
    return fallback_key(address, user_agent), False
