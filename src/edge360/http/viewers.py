"""Who is asking, for the content handlers of both roles: the client's address, the viewer behind
a content request (session key, sid, token), the child-cache, loop and token checks, and the
session touch (docs/SESSIONS.md).

The viewer rules themselves are sessions.viewer's, applied here to a parsed Request. A child edge
that proves the peer token opens no session and gets playlists unrewritten (docs/HTTP.md, "Tiers").
"""

from __future__ import annotations

import hmac

from edge360.core.errors import LoopDetected
from edge360.http.wire import Request
from edge360.node.state import NodeState
from edge360.security import tokens as auth
from edge360.security.clientaddr import client_address
from edge360.sessions import viewer as viewerrules
from edge360.sessions.playout import MAIN
from edge360.sessions.viewer import Viewer

#: how many edge360 hops a request may have passed before we call it a forwarding loop (RFC 8586)
MAX_HOPS = 8


def address_of(request: Request, node: NodeState) -> str:
    """The client's address: the PROXY header's source or the TCP peer (as the connection knows
    it), then any forwarding headers when that address is a trusted proxy."""
    if not node.trusted:
        return request.peer
    found = request.client
    if found is None:
        found = request.client = client_address(request.peer, request.fields, node.trusted)
    return found


def identify(request: Request, node: NodeState, *, opens: bool) -> Viewer:
    """The viewer of a content request (sessions.viewer.identify). `opens`: a playlist request,
    which opens a session under a fresh sid when it carries no usable id."""
    return viewerrules.identify(request.params(), request.fields, address_of(request, node),
                                opens=opens)


def is_peer(request: Request, node: NodeState) -> bool:
    """True when a child edge proved the shared peer token (Authorization: Bearer <token>)."""
    secret = node.config.peer.token
    if not secret:
        return False
    header = request.fields.get("authorization", "")
    if not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), secret.encode())


def is_child_cache(request: Request, node: NodeState) -> bool:
    """A request from a downstream edge360 (peer token proven, or CDN-Loop naming edge360 when no
    peer token is configured): it opens no viewer session and gets playlists unrewritten."""
    if is_peer(request, node):
        return True
    return not node.config.peer.token and "edge360" in request.fields.get("cdn-loop", "")


def check_loop(request: Request, own_pseudonym: str | None = None) -> None:
    """Refuse a request that went round the tiers too often (RFC 8586 CDN-Loop), or that this
    process already forwarded (its upstream pseudonym is in Via, RFC 9110 §7.6.3): answered at
    once, before it could wait on the very fetch that sent it."""
    if request.fields.get("cdn-loop", "").count("edge360") > MAX_HOPS:
        raise LoopDetected("forwarding loop: too many edge360 hops")
    via = request.fields.get("via")
    if own_pseudonym and via and own_pseudonym in received_by([via]):
        raise LoopDetected("forwarding loop: this node already forwarded the request")


def received_by(via_fields: list[str]) -> set[str]:
    """The received-by names of Via fields ("1.1 name, HTTP/2 other" -> {"name", "other"})."""
    names = set()
    for value in via_fields:
        for entry in value.split(","):
            parts = entry.split()
            if len(parts) >= 2:
                names.add(parts[1])
    return names


def check_token(request: Request, node: NodeState, path: str) -> None:
    """With auth.required, every content request needs a valid token (child peers are waived)."""
    if not node.config.auth.required or is_peer(request, node):
        return
    auth.verify(request.param("token"), path=path, sid=request.param("sid"),
                keys=node.auth_keys, now=node.clock())


def touch(node: NodeState, viewer: Viewer | None, status: int, *, title: str,
          rendition: str | None, playlist: bool, nbytes: int = 0,
          media: float | None = None, track: int = MAIN) -> bool:
    """Count an answer in the viewer's session when it counts (viewer.counted). `media`:
    the seconds of media it carries (EXTINF; 0.0 for an init section or a segment of unknown
    length) on `track`, None for an answer that carries none (a playlist or a key, which keeps
    the session's rendition label and never starts playback). True when it counted a view."""
    if viewer is None or viewer.away or not viewerrules.counted(status):
        return False  # (an `away` viewer was sent to play on another node: docs/OVERLOAD.md)
    return node.tracker.touch(viewer.key, node.clock(), title=title,
                              rendition=None if playlist or media is None else rendition,
                              nbytes=nbytes, media=media or 0.0, track=track,
                              cmcd=viewer.cmcd)
