"""The node's own endpoints: /healthz, /metrics, /api/stats (and /api/titles on an origin); none
opens or touches a session. With --workers N the figures are node-wide whichever worker answers
(the worker asks the hub first)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from edge360 import __version__
from edge360.http.dispatch import Route, route
from edge360.http.response import Response, encode_fields, json_response
from edge360.http.wire import Request
from edge360.node.counters import TierGauge
from edge360.node.state import NodeState
from edge360.ops.metrics import NodeCollector, exposition, make_registry, stores_series
from edge360.ops.overload import stats_fields

#: egress samples kept (one a second): the egress rate is over this many seconds
EGRESS_SAMPLES = 10


def sample_egress(node: NodeState, samples: deque[tuple[float, int]]) -> None:
    """Called once a second: keep (time, egress total) pairs for the egress rate."""
    samples.append((node.clock(), sum(node.node_counters().egress.values())))


def stats_body(node: NodeState, samples: deque[tuple[float, int]]) -> dict[str, object]:
    t = node.tracker
    now = node.clock()
    t.expire(now)
    by_label = t.active_by_label()
    titles: dict[str, int] = {}
    mix: dict[str, int] = {}
    for (title, rendition), n in by_label.items():
        titles[title] = titles.get(title, 0) + n
        mix[rendition] = mix.get(rendition, 0) + n
    rate = 0.0
    if len(samples) >= 2:
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        rate = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return {
        "sessions_active": t.active,
        "sessions_peak": t.peak,
        "sessions_peak_time": t.peak_time,
        "sessions_peak_recent": t.peak_recent(now),
        "views_total": t.views,
        "sessions_starting": t.starting,
        "idle_timeout": node.config.sessions.idle_timeout,
        "time_scale": node.config.sessions.time_scale,
        "top_titles": sorted(titles.items(), key=lambda kv: -kv[1])[:10],
        "rendition_mix": mix,
        "egress_bytes_total": sum(node.node_counters().egress.values()),
        "egress_bits_per_second": round(rate * 8, 1),
        "role": node.config.server.role,
        "workers": node.config.server.workers,
        **stats_fields(node),  # admission, shaping, steering (docs/OVERLOAD.md)
    }


class Endpoints:
    """The node's own endpoints over one node state."""

    def __init__(self, node: NodeState) -> None:
        self.node = node
        self.egress: deque[tuple[float, int]] = deque(maxlen=EGRESS_SAMPLES)

        def tiers() -> Sequence[TierGauge]:
            return node.role_state.tiers() if node.role_state is not None else ()

        def parents() -> dict[str, bool]:
            return node.role_state.parents_up() if node.role_state is not None else {}

        self.registry: CollectorRegistry = make_registry(NodeCollector(
            tracker=lambda: node.tracker, counters=node.node_counters, now=node.clock,
            tiers=tiers, parents=parents))

    def healthz(self, request: Request) -> Response:
        """200 while serving, 503 while draining; the role adds its own health."""
        node = self.node
        body: dict[str, object] = {
            "status": "draining" if node.draining else "ok",
            "role": node.config.server.role,
            "version": __version__,
            "uptime": round(node.clock() - node.started_at, 3),
        }
        if node.role_state is not None:
            body.update(node.role_state.health())
        return json_response(body, 503 if node.draining else 200)

    async def metrics(self, request: Request) -> Response:
        await self.node.refresh()
        return Response(200, encode_fields({"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"}),
                        body=exposition(self.registry, storing=stores_series(request.fields)))

    async def stats(self, request: Request) -> Response:
        await self.node.refresh()
        return json_response(stats_body(self.node, self.egress))

    def tick(self) -> None:
        """Once a second: end idle sessions, sample egress."""
        self.node.tracker.expire(self.node.clock())
        sample_egress(self.node, self.egress)

    def routes(self) -> dict[str, Route]:
        return {"/healthz": route(self.healthz), "/metrics": route(self.metrics),
                "/api/stats": route(self.stats)}
