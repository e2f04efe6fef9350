"""The viewer rules of docs/SESSIONS.md on plain request values, stated once: who a content
request belongs to, when it opens a session under a fresh sid, when that opening counts against
sessions.per_ip_per_minute, and which answers count in a session.

The content plane applies them (http.viewers, http.guard, http.admission and the handlers of
both roles). They take a request's query and header fields as mappings: `query.get(name)` is the
first value of a repeated name, header fields are looked up by lower-case name (the wire reader
lower-cases them). The id precedence and the sid format themselves are `sessions.identity`'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from edge360.core.kinds import PLAYLIST, kind_of
from edge360.sessions import cmcd as cmcd_keys
from edge360.sessions import identity as ids
from edge360.sessions.cmcd import Playback

#: query parameters that identify one viewer: never in a cache key, never copied from an upstream
#: URI into another viewer's playlist
VIEWER_PARAMS = frozenset({"sid", "token", "CMCD", "ticket"})
#: answers that count in the viewer's session: content served, or confirmed unchanged (304);
#: a refusal or an error does not keep a session alive
_COUNTED = frozenset({200, 206, 304})


@dataclass(slots=True)
class Viewer:
    """A viewer as seen by one request."""

    key: str  # the tracker key
    sid: str | None  # the sid carried into playlist URIs (None: nothing to carry)
    token: str | None  # the signed token carried into playlist URIs
    address: str
    minted: bool = False  # the sid was minted for this request: no later request carries it yet
    cmcd: Playback | None = None  # what the request's CMCD says about playback
    #: admission (docs/OVERLOAD.md), set by the playlist's admission check: the admitted ticket
    #: the viewer carries, the pathway it starts on, whether it is a new viewer, and whether it
    #: was sent to play on another node (then it takes no seat and opens no session here)
    ticket: str | None = None
    pathway: str | None = None
    fresh: bool = False
    away: bool = False

    def __init__(self, key: str, sid: str | None, token: str | None, address: str,
                 minted: bool = False, cmcd: Playback | None = None) -> None:
        # written out, not generated: in a compiled module the dataclass-made __init__ would
        # stay interpreted Python, on every content request (docs/ARCHITECTURE.md)
        self.key, self.sid, self.token, self.address = key, sid, token, address
        self.minted, self.cmcd = minted, cmcd
        self.ticket = self.pathway = None
        self.fresh = self.away = False

    def params(self) -> str:
        """The query fragment appended to every URI of a playlist served to this viewer."""
        parts = []
        if self.sid:
            parts.append("sid=" + self.sid)  # valid sids are URL-safe by their pattern
        if self.token:
            parts.append("token=" + quote(self.token, safe=""))
        if self.ticket:
            parts.append("ticket=" + self.ticket)  # tickets are URL-safe by their format
        return "&".join(parts)


def identify(query: Mapping[str, str], fields: Mapping[str, str], address: str, *,
             opens: bool) -> Viewer:
    """The viewer of a content request: `sid` query > CMCD query sid > CMCD-Session header >
    address + User-Agent (sessions.identity; an invalid id counts as absent and is never echoed
    back). `opens`: a playlist request, which opens a session under a fresh sid when it carries no
    id, so the rewritten URIs can carry one; the fallback key itself is never written anywhere.
    The playback keys of its CMCD (query or the four CMCD-* fields) go with it to the session."""
    cmcd_query, cmcd_session = query.get("CMCD"), fields.get("cmcd-session")
    key, explicit = ids.identity(query.get("sid"), cmcd_query, cmcd_session, address,
                                 fields.get("user-agent", ""))
    token = query.get("token") or None
    playback = cmcd_keys.playback(cmcd_query, fields.get("cmcd-request"),
                                  fields.get("cmcd-status"), cmcd_session,
                                  fields.get("cmcd-object"))
    if not explicit and opens:
        fresh = ids.new_sid()
        return Viewer(key=fresh, sid=fresh, token=token, address=address, minted=True,
                      cmcd=playback)
    return Viewer(key=key, sid=key if explicit else None, token=token, address=address,
                  cmcd=playback)


def opens_counted_session(path: str, method: str, query: Mapping[str, str],
                          fields: Mapping[str, str], address: str) -> bool:
    """Whether serving the request opens a session that sessions.per_ip_per_minute counts: a
    GET/HEAD of a playlist carrying no session id, the cheap way to inflate the session count.
    A playlist is known by its kind (kinds.kind_of, case-insensitive), exactly as the handlers
    decide to open a session, so "/t/master.M3U8" cannot open sessions the bound never counts.
    Loopback is exempt: a load test from one machine (`edge360 replay`) is many viewers on
    127.0.0.1."""
    if method not in ("GET", "HEAD") or kind_of(path) != PLAYLIST:
        return False
    if ids.explicit_sid(query.get("sid"), query.get("CMCD"),
                             fields.get("cmcd-session")) is not None:
        return False
    return not is_loopback(address)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def counted(status: int) -> bool:
    """Whether an answer of `status` counts in the viewer's session (a touch)."""
    return status in _COUNTED
