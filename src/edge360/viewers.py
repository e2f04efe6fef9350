"""Who is asking: the viewer behind a content request (session key, sid, token, address) and the
child-cache check, shared by the origin and the edge so both count viewers by the same rules.

Rules come from CONTRACT.md (Sessions, Tiers): `sid` query > CMCD query sid > CMCD-Session header >
address + User-Agent; a playlist asked for without an id opens a session under a new sid; a child
edge that proves the peer token opens no session and gets playlists unrewritten.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from edge360 import auth, sessions
from edge360.clientaddr import client_address
from edge360.errors import LoopDetected
from edge360.state import NODE, NodeState

#: how many edge360 hops a request may have passed before we call it a forwarding loop (RFC 8586)
MAX_HOPS = 8


@dataclass(slots=True)
class Viewer:
    """A viewer as seen by one request."""

    key: str  # the tracker key
    sid: str | None  # the sid carried into playlist URIs (None: nothing to carry)
    token: str | None  # the signed token carried into playlist URIs
    address: str

    def params(self) -> str:
        """The query fragment appended to every URI of a playlist served to this viewer."""
        parts = []
        if self.sid:
            parts.append("sid=" + self.sid)  # valid sids are URL-safe by their pattern
        if self.token:
            parts.append("token=" + quote(self.token, safe=""))
        return "&".join(parts)


def address_of(request: web.BaseRequest, node: NodeState) -> str:
    """The client's address: the PROXY header's source (proxyproto) or the TCP peer, then any
    forwarding headers when that address is a trusted proxy."""
    peer = (node.proxied.get(request.transport) if node.proxied else None) or request.remote or ""
    if not node.trusted:
        return peer
    return client_address(peer, request.headers, node.trusted)


def identify(request: web.Request, node: NodeState, *, opens: bool) -> Viewer:
    """The viewer of a content request. `opens`: a playlist request, which opens a session under a
    fresh sid when it carries no usable id (so the rewritten URIs can carry it)."""
    query = request.query
    sid = query.get("sid")  # where sid appears twice, the first counts
    if sid is not None and not sessions.valid_sid(sid):
        sid = None  # treated as absent and never echoed back
    token = query.get("token") or None
    address = address_of(request, node)
    key, explicit = sessions.identity(
        sid, query.get("CMCD"), request.headers.get("CMCD-Session"), address,
        request.headers.get("User-Agent", ""))
    if not explicit and opens:
        fresh = sessions.new_sid()
        return Viewer(key=fresh, sid=fresh, token=token, address=address)
    return Viewer(key=key, sid=key if explicit else None, token=token, address=address)


def is_peer(request: web.Request, node: NodeState) -> bool:
    """True when a child edge proved the shared peer token (Authorization: Bearer <token>)."""
    secret = node.config.peer.token
    if not secret:
        return False
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), secret.encode())


def is_child_cache(request: web.Request, node: NodeState) -> bool:
    """A request from a downstream edge360 (peer token proven, or CDN-Loop naming edge360 when no
    peer token is configured): it opens no viewer session and gets playlists unrewritten."""
    if is_peer(request, node):
        return True
    return not node.config.peer.token and "edge360" in request.headers.get("CDN-Loop", "")


def check_loop(request: web.Request) -> None:
    """Refuse a request that went round the tiers too often (RFC 8586 CDN-Loop), or that this
    process already forwarded (its upstream pseudonym is in Via, RFC 9110 §7.6.3): answered at once,
    before it could wait on the very fetch that sent it (an edge that is its own upstream, or a
    cycle of edges)."""
    hops = request.headers.get("CDN-Loop", "").count("edge360")
    if hops > MAX_HOPS:
        raise LoopDetected("forwarding loop: too many edge360 hops")
    upstream = getattr(request.app[NODE].role_state, "upstream", None)
    own = getattr(upstream, "pseudonym", None)
    if own and own in received_by(request.headers.getall("Via", [])):
        raise LoopDetected("forwarding loop: this node already forwarded the request")


def received_by(via_fields: list[str]) -> set[str]:
    """The received-by names of Via fields ("1.1 name, HTTP/2 other" -> {"name", "other"})."""
    names = set()
    for field in via_fields:
        for entry in field.split(","):
            parts = entry.split()
            if len(parts) >= 2:
                names.add(parts[1])
    return names


def check_token(request: web.Request, node: NodeState, path: str) -> None:
    """With auth.required, every content request needs a valid token (child peers are waived)."""
    if not node.config.auth.required or is_peer(request, node):
        return
    sid = request.query.get("sid")
    auth.verify(request.query.get("token"), path=path, sid=sid, keys=node.auth_keys,
                now=node.clock())


def touch(node: NodeState, viewer: Viewer, *, title: str, rendition: str | None,
          nbytes: int = 0) -> bool:
    """Count a served content request in the viewer's session; True when it opened one."""
    return node.tracker.touch(viewer.key, node.clock(), title=title, rendition=rendition,
                              nbytes=nbytes)
