"""Composition: create_app(config, *, clock) -> web.Application. Wiring only, no decisions.

Builds the node state (tracker, counters, metrics registry), the role's handlers and the owned
background tasks (session expiry, egress sampling, title rescans).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from edge360.config.schema import Config
from edge360.edge import handler as edge
from edge360.http import guard as limits
from edge360.http.middleware import guard
from edge360.node.accesslog import AccessLog
from edge360.node.counters import Counters, TierGauge, TrackerView
from edge360.node.state import NODE, NodeState
from edge360.node.tasks import TaskGroup
from edge360.ops import endpoints as ops
from edge360.ops import player
from edge360.ops.metrics import NodeCollector, make_registry
from edge360.origin import handler as origin
from edge360.security import keyset
from edge360.security import tokens as auth
from edge360.security.clientaddr import TrustedProxies
from edge360.sessions.statefile import new_tracker

TASKS = web.AppKey("edge360_tasks", TaskGroup)


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


def create_app(config: Config, *, clock: Callable[[], float] = time.time,
               tracker: TrackerView | None = None) -> web.Application:
    """The application for `config`; `tracker` is the session tracker to use (a restored one,
    or a worker's view of the node's hub), a fresh one by default."""
    node = build_node(config, clock, tracker)
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024,
                          handler_args={"max_field_size": config.limits.max_header_bytes,
                                        "max_line_size": config.limits.max_header_bytes})
    app[NODE] = node
    if node.access_log is not None:
        log = node.access_log

        async def close_log(_: web.Application) -> None:
            log.close()  # the last lines, after every answer (cleanup runs after the drain)
        app.on_cleanup.append(close_log)
    limits.install(app)
    app[TASKS] = TaskGroup()
    app[ops.EGRESS] = deque(maxlen=10)
    def tiers() -> Sequence[TierGauge]:
        return getattr(node.role_state, "tiers", tuple)()

    def parents() -> dict[str, bool]:
        return getattr(node.role_state, "parents_up", dict)()

    collector = NodeCollector(tracker=lambda: node.tracker, counters=node.node_counters,
                              now=node.clock, tiers=tiers, parents=parents)
    app[ops.REGISTRY] = make_registry(collector)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/api/stats", ops.stats)
    player.install(app)  # before the roles' catch-all content routes

    async def reload_keys() -> str:
        node.auth_keys = keyset.reload_keys(node.config, node.auth_keys)  # or keeps them
        return f"{len(node.auth_keys)} auth keys"
    node.reloaders.append(reload_keys)

    if config.server.role == "origin":
        app.router.add_get("/api/titles", origin.titles)
        app.router.add_route("*", "/{tail:.*}", origin.handle)
        app.cleanup_ctx.append(_origin_ctx)
    else:
        edge.install(app, node)
    app.cleanup_ctx.append(_ticker_ctx)
    return app


async def _ticker_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    tasks = app[TASKS]
    samples = app[ops.EGRESS]

    async def tick() -> None:
        node.tracker.expire(node.clock())
        ops.sample_egress(node, samples)
    tasks.every(1.0, tick, "ticker")
    yield
    await tasks.close()


async def _origin_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    node.role_state = origin.OriginState(await origin.load_catalog(node))

    async def rescan() -> str:
        return await origin.rescan(node)
    node.reloaders.append(rescan)
    interval = node.config.origin.rescan_interval
    if interval > 0:
        app[TASKS].every(interval, rescan, "rescan")
    yield
