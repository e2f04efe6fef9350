"""Counting an edge answer once its body went out: the cache result, the viewer's session, egress,
a late segment, and the prefetch bookkeeping."""

from __future__ import annotations

from edge360.edge.objects import Target
from edge360.edge.state import EdgeState
from edge360.http.viewers import touch
from edge360.node.counters import bounded
from edge360.sessions.viewer import Viewer

RESULTS = {"HIT": "hit", "MISS": "miss", "STALE": "stale"}


def account(state: EdgeState, t: Target, viewer: Viewer | None, child: bool, result: str,
            status: int, body_bytes: int, seconds: float, offset: int | None) -> None:
    """Count an answer: cache result, the viewer's session, egress, a late segment, and the
    prefetch bookkeeping."""
    counters = state.counters
    label = RESULTS.get(result, result.lower())
    counters.cache_requests[label] += 1
    counters.cache_bytes[label] += body_bytes
    rendition, media, track, ref = state.index.answer_facts(t.path, t.title, offset, t.kind)
    touch(state.node, viewer, status, title=t.title, rendition=rendition,
          playlist=t.kind == "playlist", nbytes=body_bytes, media=media, track=track)
    if body_bytes:
        counters.egress[bounded(counters.egress, (t.title, rendition))] += body_bytes
    if t.kind == "segment" and status in (200, 206):
        if body_bytes and ref is not None and ref.duration > 0 and seconds > ref.duration:
            counters.late_segments[bounded(counters.late_segments, (t.title, rendition))] += 1
        if not child and ref is not None:
            length = body_bytes if offset is not None else 0
            state.prefetcher.after(t, (offset, length) if offset is not None else None)
    if result == "HIT":
        state.prefetcher.used(t.key)

