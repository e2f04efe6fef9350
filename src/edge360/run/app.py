"""Composition: one node's state, its role, its endpoints and the dispatcher every connection
answers through. Wiring only, no decisions.

`App(config)` builds the node state (tracker, counters, access log, auth keys); `start()` starts
the role (the origin's catalog scan, the edge's parents and cache) and the owned background tasks
(session expiry, egress sampling, rescans), then `dispatcher` answers requests; `close()` stops
them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from edge360.config.schema import Config
from edge360.core.errors import NotFound
from edge360.edge.role import EdgeRole
from edge360.http.dispatch import Dispatcher, Endpoint, Route
from edge360.http.guard import Limits
from edge360.http.response import Response
from edge360.http.wire import Request
from edge360.node.accesslog import AccessLog
from edge360.node.counters import Counters, TrackerView
from edge360.node.state import NodeState
from edge360.node.tasks import TaskGroup
from edge360.ops.endpoints import Endpoints
from edge360.ops.overload import Overload, OverloadCollector
from edge360.ops.player import player_pages
from edge360.origin.role import OriginRole
from edge360.security import keyset
from edge360.security import tokens as auth
from edge360.security.clientaddr import TrustedProxies
from edge360.sessions.statefile import new_tracker
from edge360.sessions.tracker import SessionTracker


class Role(Protocol):
    """What the node asks of its role (origin.role, edge.role)."""

    @property
    def content(self) -> Endpoint | None: ...

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def routes(self) -> dict[str, Route]: ...
    def serves_demo(self) -> bool: ...


def load_auth_keys(config: Config) -> tuple[auth.Key, ...]:
    """Keys from EDGE360_AUTH_KEYS, or the file EDGE360_AUTH_KEYS_FILE names (re-read on SIGHUP);
    refused when empty while auth.required is on (security.keyset)."""
    return keyset.read_keys(config)


def build_node(config: Config, clock: Callable[[], float],
               tracker: TrackerView | None = None) -> NodeState:
    counters = Counters()
    return NodeState(
        config=config, clock=clock,
        tracker=tracker if tracker is not None else new_tracker(config),
        counters=counters, trusted=TrustedProxies(config.server.trusted_proxies),
        started_at=clock(), auth_keys=load_auth_keys(config),
        access_log=AccessLog(counters) if config.server.access_log else None)


class App:
    """See the module docstring."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 tracker: TrackerView | None = None) -> None:
        self.node = node = build_node(config, clock, tracker)
        self.tasks = TaskGroup()
        self.limits = Limits(config)
        self.endpoints = Endpoints(node)
        # admission, shaping, steering (docs/OVERLOAD.md); one process holds the session table
        self.overload = Overload(node, node.tracker if isinstance(node.tracker, SessionTracker)
                                 else None)
        self.endpoints.registry.register(OverloadCollector(node))
        self.role: Role = OriginRole(node, self.tasks) if config.server.role == "origin" \
            else EdgeRole(node)
        self.dispatcher: Dispatcher | None = None

        async def reload_keys() -> str:
            node.auth_keys = keyset.reload_keys(node.config, node.auth_keys)  # or keeps them
            return f"{len(node.auth_keys)} auth keys"
        node.reloaders.append(reload_keys)

    async def start(self) -> Dispatcher:
        await self.role.start()
        content = self.role.content
        assert content is not None
        routes = {**self.endpoints.routes(),
                  **player_pages(self.node.config.steering.pathways).routes(),
                  **self.role.routes(), **self.overload.routes()}
        self.dispatcher = Dispatcher(self.node, self.limits, content, routes)
        self.overload.start(self.tasks)

        async def tick() -> None:
            self.endpoints.tick()
        self.tasks.every(1.0, tick, "ticker")
        return self.dispatcher

    def monitoring(self) -> Dispatcher:
        """The dispatcher of server.metrics_listen: /healthz, /metrics and /api/stats of this
        node, nothing else (content paths are 404), never rate limited."""
        def nothing(request: Request) -> Response:
            raise NotFound(request.path)
        return Dispatcher(self.node, Limits(self.node.config.replace(
            "limits", rate_per_ip=0.0).replace("sessions", per_ip_per_minute=0)), nothing,
            self.endpoints.routes(), counted=False)

    def serves_demo(self) -> bool:
        return self.role.serves_demo()

    async def close(self) -> None:
        await self.tasks.close()
        await self.overload.close()
        await self.role.close()
        if self.node.access_log is not None:
            self.node.access_log.close()  # the last lines, after every answer
