"""Content steering's server side (docs/OVERLOAD.md, "Steering"): every second each pathway's
`/api/stats` is read, and `GET /steering` answers a player's steering manifest from what they
said (HLS 2nd edition, draft-pantos-hls-rfc8216bis §4.4.6.6 and its Steering Manifest).

A pathway that does not answer (refused, timed out, a 5xx) or says it is draining is down; one
that answers without edge360's figures (a CDN of another make) is up with an unknown load. The
manifest lists the pathways in the order core.steering gives for the player, from its session
id (a stable draw), its `_HLS_pathway` and its `_HLS_throughput`. Its RELOAD-URI is this node's
own /steering, so a player keeps asking the node that steered it; a draining node points it at
the steering server of the first pathway up that has one instead, so a player keeps getting
steered once the node has gone. Answering never opens or touches a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from edge360.core import steering
from edge360.core.steering import Pathway
from edge360.http.represent import cors_headers
from edge360.http.response import Response, json_response
from edge360.http.wire import Request
from edge360.node.overload import OverloadState, PathwayState
from edge360.node.state import NodeState
from edge360.sessions.identity import valid_sid

log = logging.getLogger("edge360.steering")

#: seconds a pathway's /api/stats may take before it counts as down
POLL_TIMEOUT = 1.0
#: largest /api/stats body read from a pathway
MAX_STATS = 256 * 1024


def draw(sid: str | None) -> float:
    """A player's stable number in [0, 1): from its session id (0.5 without one)."""
    if not sid:
        return 0.5
    return int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest()) / 2**64


def read_stats(pid: str, data: object) -> PathwayState:
    """A pathway's state from its /api/stats JSON (unknown load when it is not edge360's)."""
    if not isinstance(data, dict):
        return PathwayState(Pathway(pid, up=True))
    if data.get("draining") is True:
        return PathwayState(Pathway(pid, up=False), node_id=_text(data.get("node_id")))
    # its load is every seat it holds, as its admission counts them: active sessions and
    # starting ones (viewers it admitted that have not fetched a segment yet). Read without the
    # starting ones, a burst of newcomers sent to it looks like room until they play, and more
    # follow them than its share
    active, starting = data.get("sessions_active"), data.get("sessions_starting", 0)
    if _count(active) and _count(starting):
        active += starting
    capacity = data.get("capacity", 0)
    limit, projected = data.get("egress_limit"), data.get("egress_projected")
    headroom = float(limit - projected) \
        if isinstance(limit, int) and isinstance(projected, int) and _count(limit) else None
    return PathwayState(
        Pathway(pid, up=True, active=active if _count(active) else None,
                capacity=capacity if _count(capacity) else 0, headroom=headroom),
        node_id=_text(data.get("node_id")), steering="steering" in data)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 64 else None


class Poller:
    """Reads every pathway's /api/stats once a second into the node's overload state."""

    def __init__(self, node: NodeState, ov: OverloadState) -> None:
        self.node, self.ov = node, ov
        self._session: aiohttp.ClientSession | None = None

    async def poll(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT),
                headers={"User-Agent": "edge360-steering"})
        pathways = self.node.config.steering.pathways
        began = self.node.clock()
        found = await asyncio.gather(*(self._one(pid, base) for pid, base in pathways))
        fresh = dict(zip([pid for pid, _ in pathways], found, strict=True))
        for pid, state in fresh.items():
            old = self.ov.paths.get(pid)
            if old is not None and old.pathway.up != state.pathway.up:
                log.warning("steering: pathway %s is %s", pid, "up" if state.pathway.up
                            else "down")
        self.ov.polled(fresh, began)

    async def _one(self, pid: str, base: str) -> PathwayState:
        assert self._session is not None
        try:
            async with self._session.get(base + "/api/stats") as resp:
                if resp.status >= 500:
                    return PathwayState(Pathway(pid, up=False))
                if resp.status != 200:
                    return PathwayState(Pathway(pid, up=True))
                raw = await resp.content.read(MAX_STATS)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return PathwayState(Pathway(pid, up=False))
        try:
            return read_stats(pid, orjson.loads(raw))
        except ValueError:
            return PathwayState(Pathway(pid, up=True))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def manifest(node: NodeState, ov: OverloadState, request: Request) -> dict[str, Any]:
    """The steering manifest for the player asking (see the module docstring)."""
    sid = request.param("sid")
    sid = sid if valid_sid(sid) else None
    current = request.param("_HLS_pathway")
    throughput: float | None = None
    raw = request.param("_HLS_throughput")
    if raw:
        try:
            throughput = float(raw)
        except ValueError:
            throughput = None
    ids = [pid for pid, _ in node.config.steering.pathways]
    ranked = steering.order(ov.pathways(), current=current if current in ids else None,
                            throughput=throughput if throughput and throughput > 0 else None,
                            draw=draw(sid))
    node.counters.steering[ranked[0]] += 1
    query = urlencode({"sid": sid} if sid else {})
    reload = "/steering" + (f"?{query}" if query else "")
    base = None
    if node.draining:  # going away: the player's next manifest comes from another node
        serving = next((pid for pid in ranked if ov.paths.get(pid) is not None
                        and ov.paths[pid].pathway.up and ov.paths[pid].steering
                        and ov.paths[pid].node_id != ov.own_id()), None)
        base = ov.base(serving) if serving is not None else None
    return {"VERSION": 1, "TTL": int(node.config.steering.ttl),
            "RELOAD-URI": (base or "") + reload, "PATHWAY-PRIORITY": ranked}


def endpoint(node: NodeState, ov: OverloadState) -> Any:
    """GET /steering: the manifest, or 404 on a node without steering.pathways."""
    def steer(request: Request) -> Response:
        headers = {**cors_headers(node.config.origin.cors_origin)}
        if not node.config.steering.pathways:
            return json_response({"error": "not found"}, 404, headers)
        return json_response(manifest(node, ov, request), 200, headers)
    return steer
