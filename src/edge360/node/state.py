"""The per-process state every handler reads: config, clock, session tracker, counters, drain flag.

`app` builds one NodeState and stores it on the aiohttp Application; handlers reach it through
`node_of(request)`. Role-specific state (the origin's catalog, the edge's cache) lives in the role's
own module and is attached here as an opaque slot, so origin and edge never import each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edge360.config.schema import Config
from edge360.node.accesslog import AccessLog
from edge360.node.counters import Counters, TrackerView
from edge360.security.clientaddr import TrustedProxies


@dataclass(slots=True)
class NodeState:
    config: Config
    clock: Callable[[], float]
    tracker: TrackerView
    counters: Counters
    trusted: TrustedProxies
    draining: bool = False
    started_at: float = 0.0
    #: called on SIGHUP (keys, upstreams, limits, titles); each returns a short description
    reloaders: list[Callable[[], Awaitable[str]]] = field(default_factory=list)
    #: the role's own state (origin.Catalog holder or edge.Edge), typed by the role module
    role_state: Any = None
    #: auth keys (tuple of auth.Key), reloaded on SIGHUP
    auth_keys: tuple[Any, ...] = ()
    #: with --workers N: the link to the supervisor's hub (hub.HubClient), else None
    hub: Any = None
    #: open connections' client addresses named by a PROXY header (transport -> address)
    proxied: dict[Any, str] = field(default_factory=dict)
    #: the access log (accesslog.AccessLog) with server.access_log, else None
    access_log: AccessLog | None = None

    async def refresh(self) -> None:
        """Bring node-wide figures up to date before reading them (a no-op with one worker)."""
        if self.hub is not None:
            await self.hub.refresh()

    def node_counters(self) -> Counters:
        """This process's counters, or the whole node's when it runs several workers."""
        return self.hub.node_counters if self.hub is not None else self.counters


NODE = web.AppKey("edge360_node", NodeState)


def node_of(request: web.Request) -> NodeState:
    return request.app[NODE]
