"""The origin role's life: the catalog scanned at start (off the loop), rescanned on a timer and
on SIGHUP, and the endpoints it adds (/api/titles)."""

from __future__ import annotations

import asyncio
import logging

from edge360.http.dispatch import Route, route
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request
from edge360.node.state import NodeState
from edge360.node.tasks import TaskGroup
from edge360.origin import catalog as catalog_mod
from edge360.origin.catalog import Catalog
from edge360.origin.files import Settle
from edge360.origin.handler import Origin, OriginState, titles_body

log = logging.getLogger("edge360.origin")


async def load_catalog(node: NodeState, previous: Catalog | None = None) -> Catalog:
    """Scan the media root in a thread; report broken and still-arriving titles by name."""
    was_live = previous.live if previous is not None else frozenset()
    cat = await asyncio.to_thread(catalog_mod.build, node.config.origin.media,
                                  node.config.origin, was_live)
    for name, problem in sorted(cat.broken.items()):
        log.warning("title %s is broken and not served: %s", name, problem)
    for name in cat.settling:
        log.info("title %s is still arriving: its newest files answer 503 until settled", name)
    return cat


class OriginRole:
    """Starts and stops the origin, and gives the dispatcher its content handler and routes."""

    def __init__(self, node: NodeState, tasks: TaskGroup) -> None:
        self.node = node
        self.tasks = tasks
        self.state: OriginState | None = None
        self.content: Origin | None = None

    async def start(self) -> None:
        node = self.node
        settle = Settle(node.config.origin.settle_seconds)
        self.state = OriginState(await load_catalog(node), settle)
        node.role_state = self.state
        self.content = Origin(node, self.state)
        node.reloaders.append(self.rescan)
        interval = node.config.origin.rescan_interval
        if interval > 0:
            self.tasks.every(interval, self.rescan, "rescan")

    async def rescan(self) -> str:
        assert self.state is not None
        self.state.catalog = await load_catalog(self.node, self.state.catalog)
        cat = self.state.catalog
        return f"{len(cat.titles)} titles, {len(cat.broken)} broken, {len(cat.settling)} settling"

    async def close(self) -> None:
        return None

    def titles(self, request: Request) -> Response:
        assert self.state is not None
        return Response(200, encode_fields({"Content-Type": "application/json"}),
                        body=titles_body(self.state.catalog))

    def routes(self) -> dict[str, Route]:
        return {"/api/titles": route(self.titles)}

    def serves_demo(self) -> bool:
        return self.state is not None and "demo" in self.state.catalog.titles
