"""Overload control wired into a node (docs/OVERLOAD.md): its state, its once-a-second tick,
`GET /steering`, the figures /api/stats adds and the gauges /metrics exports.

The tick keeps what the request path reads current: with one process it feeds the queue the
sessions that ended (the churn behind Retry-After); with --workers N it takes the hub's view
(the node-wide sessions and queue, and the node's id that steering finds itself by); then it
projects the egress of the active sessions. The pathways are polled on their own once-a-second task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edge360.http.dispatch import Route, route
from edge360.node.overload import OverloadState
from edge360.node.state import NodeState
from edge360.node.tasks import TaskGroup
from edge360.ops import steering
from edge360.sessions.admission import Seats


class Overload:
    """See the module docstring."""

    def __init__(self, node: NodeState, seats: Seats | None) -> None:
        self.node = node
        self.state = node.overload = OverloadState.build(node, seats)
        self.poller = steering.Poller(node, self.state)

        async def reload_keys() -> str:
            return self.state.reload_keys()
        node.reloaders.append(reload_keys)

    def routes(self) -> dict[str, Route]:
        return {"/steering": route(steering.endpoint(self.node, self.state))}

    def start(self, tasks: TaskGroup) -> None:
        tasks.every(1.0, self.tick, "overload-tick")
        if self.node.config.steering.pathways:
            tasks.every(1.0, self.poller.poll, "steering-poll")

    async def close(self) -> None:
        await self.poller.close()

    async def tick(self) -> None:
        node, ov = self.node, self.state
        now = node.clock()
        if ov.queue is not None and ov.seats is not None:
            node.tracker.expire(now)
            ov.queue.observe(now, ov.seats.views - ov.seats.active)
        elif node.hub is not None and ov.active:
            await node.refresh()  # the node-wide sessions, and the hub's id for steering
        if node.hub is not None:
            ov.remote = dict(node.hub.view.get("admission") or {})
        if ov.shaping_limit > 0:
            ov.project(node.tracker.active_by_label())


def stats_fields(node: NodeState) -> dict[str, Any]:
    """/api/stats's overload figures (docs/OVERLOAD.md, "Figures"), for ops.endpoints."""
    ov = node.overload
    if ov is None:
        return {}
    if node.hub is not None:
        ov.remote = dict(node.hub.view.get("admission") or {})
    out = ov.figures(node.clock())
    out["draining"] = node.draining
    return out


class OverloadCollector(Collector):
    """The overload gauges, read at scrape time (the counters are node.counters')."""

    def __init__(self, node: NodeState) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ov = self.node.overload
        if ov is None:
            return
        figures = stats_fields(self.node)
        yield GaugeMetricFamily("edge360_sessions_queued",
                                "Viewers waiting in the admission queue",
                                value=figures.get("sessions_queued", 0))
        yield GaugeMetricFamily("edge360_sessions_capacity",
                                "Viewers the node admits (sessions.capacity; 0 = no limit)",
                                value=ov.capacity)
        # bytes a second, as Prometheus's base unit wants (the config and /api/stats say bit/s)
        yield GaugeMetricFamily("edge360_egress_projected_bytes_per_second",
                                "Egress the active sessions draw by their renditions' BANDWIDTH",
                                value=ov.projected / 8)
        yield GaugeMetricFamily("edge360_egress_limit_bytes_per_second",
                                "The egress budget (server.egress_limit / 8; 0 = off)",
                                value=ov.shaping_limit / 8)
        if ov.steering:
            up = GaugeMetricFamily("edge360_steering_pathway_up",
                                   "1 while a steering pathway answers its polls",
                                   labels=["pathway"])
            sessions = GaugeMetricFamily(
                "edge360_steering_pathway_sessions",
                "Viewers on each steering pathway, as its last poll said", labels=["pathway"])
            for pid, s in ov.paths.items():
                up.add_metric([pid], 1 if s.pathway.up else 0)
                if s.pathway.up and s.pathway.active is not None:
                    sessions.add_metric([pid], s.pathway.active)
            yield up
            yield sessions
