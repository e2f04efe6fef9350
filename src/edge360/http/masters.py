"""A viewer's playlist on its way out, for overload control (docs/OVERLOAD.md): both roles call
`finish` with the playlist already rendered for the viewer, before it is compressed.

- Shaping: a master learns the node its ladder (rendition -> BANDWIDTH, for the projected
  egress); while the node is shaping, a new viewer's master leaves out the variants above the
  cap (hls.shape), and every viewer playlist carries `CMSD-Dynamic` (CTA-5006) with `mb`, the
  suggested maximum bitrate in kbit/s, which CORS lets a player on another origin read.
- Steering: a master carries EXT-X-CONTENT-STEERING and its variants once per pathway
  (hls.steer), starting the viewer on the pathway admission chose for it, or the first of the
  current order.

Existing viewers keep what they chose: a master is shaped only for a viewer admitted by this
request. Nothing here opens or ends a session.
"""

from __future__ import annotations

import logging

from edge360.core import steering
from edge360.hls import shape, steer
from edge360.node.state import NodeState
from edge360.sessions.viewer import Viewer

log = logging.getLogger("edge360.overload")

_MASTER = b"#EXT-X-STREAM-INF"


def cmsd(mb_bps: int) -> str:
    """The CMSD-Dynamic value (CTA-5006: a structured-field list of servers, each with its
    keys): this server suggests at most `mb_bps` (`mb` is in kbit/s)."""
    return f'"edge360";mb={max(1, mb_bps // 1000)}'


def finish(node: NodeState, viewer: Viewer | None, path: str, title: str, body: bytes,
           headers: dict[str, str]) -> bytes:
    """The playlist `body` rendered for `viewer`, shaped and steered as the node is now;
    `headers` (the answer's) may gain CMSD-Dynamic."""
    ov = node.overload
    if ov is None or viewer is None or not ov.active:
        return body
    if _MASTER not in body:
        top = _cap_now(node, title)
        if top is not None:
            _advertise(headers, top)
        return body
    text = body.decode("utf-8", "replace")
    ladder = ov.learn_ladder(title, path, text)
    top = ov.cap(ladder)
    if top is not None:
        _advertise(headers, top)
        if viewer.fresh or viewer.minted:
            text, removed = shape.shaped(text, path, top)
            if removed:
                node.counters.shaped += 1
                log.info("shaping: %s for a new viewer without %d variants above %d bit/s "
                         "(projected %.0f of %d bit/s)", path, removed, top, ov.projected,
                         ov.shaping_limit)
    if ov.steering:
        start = viewer.pathway
        if start is None:
            ranked = steering.order(ov.pathways(), current=ov.own_pathway())
            start = ranked[0] if ranked else node.config.steering.pathways[0][0]
        node.counters.steering[start] += 1
        server = "/steering" + (f"?sid={viewer.sid}" if viewer.sid else "")
        text = steer.with_pathways(text, path, node.config.steering.pathways, start, server)
    return text.encode()


def _cap_now(node: NodeState, title: str) -> int | None:
    """The cap over the title's ladder as the node knows it (for a media playlist's CMSD)."""
    ov = node.overload
    if ov is None or ov.shaping_limit <= 0:
        return None
    return shape.cap([bw for (t, _), bw in ov.rungs.items() if t == title], ov.projected,
                     ov.shaping_limit)


def _advertise(headers: dict[str, str], top: int) -> None:
    headers["CMSD-Dynamic"] = cmsd(top)
    exposed = headers.get("Access-Control-Expose-Headers")
    if exposed is not None and "CMSD-Dynamic" not in exposed:
        headers["Access-Control-Expose-Headers"] = exposed + ", CMSD-Dynamic"
