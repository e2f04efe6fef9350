"""The per-process state every handler reads: config, clock, session tracker, counters, drain flag,
auth keys, and the links to the role's own state and to the worker hub.

The role's state (the origin's catalog, the edge's cache and parents) and the hub link are typed
by the Protocols below, so this layer never imports the roles and the roles never import each
other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge360.config.schema import Config
from edge360.node.accesslog import AccessLog
from edge360.node.counters import Counters, TierGauge, TrackerView
from edge360.node.overload import OverloadState
from edge360.security.clientaddr import TrustedProxies
from edge360.security.tokens import Key


class RoleState(Protocol):
    """What the node's own endpoints read of the role (origin catalog or edge cache)."""

    def health(self) -> dict[str, object]: ...
    def tiers(self) -> Sequence[TierGauge]: ...
    def parents_up(self) -> dict[str, bool]: ...


class HubLink(Protocol):
    """A worker's link to the supervisor's hub (run.hubclient.HubClient) with --workers N."""

    worker: int
    handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]
    #: the hub's last node-wide view (sessions, and admission's figures)
    view: dict[str, Any]

    @property
    def node_counters(self) -> Counters: ...
    async def refresh(self) -> None: ...
    async def admit(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def cast(self, op: str, args: dict[str, Any]) -> list[Any]: ...


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
    #: the role's own state, set when the role starts
    role_state: RoleState | None = None
    #: auth keys, reloaded on SIGHUP
    auth_keys: tuple[Key, ...] = ()
    #: with --workers N: the link to the supervisor's hub, else None
    hub: HubLink | None = None
    #: open connections' client addresses named by a PROXY header (transport -> address)
    proxied: dict[Any, str] = field(default_factory=dict)
    #: the access log with server.access_log, else None
    access_log: AccessLog | None = None
    #: admission, shaping and steering (docs/OVERLOAD.md), set by the app
    overload: OverloadState | None = None

    async def refresh(self) -> None:
        """Bring node-wide figures up to date before reading them (a no-op with one worker)."""
        if self.hub is not None:
            await self.hub.refresh()

    def node_counters(self) -> Counters:
        """This process's counters, or the whole node's when it runs several workers."""
        return self.hub.node_counters if self.hub is not None else self.counters
