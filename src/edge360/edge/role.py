"""The edge role's life: its state (parents, cache tiers, flights) started and stopped with the
node, its content handler and the admin endpoints it adds."""

from __future__ import annotations

from edge360.edge import admin
from edge360.edge.handler import Edge
from edge360.edge.state import EdgeState
from edge360.http.dispatch import Route
from edge360.node.state import NodeState


class EdgeRole:
    """Starts and stops the edge, and gives the dispatcher its content handler and routes."""

    def __init__(self, node: NodeState) -> None:
        self.node = node
        self.state: EdgeState | None = None
        self.content: Edge | None = None

    async def start(self) -> None:
        self.state = EdgeState(self.node)
        self.node.role_state = self.state
        await self.state.start()
        self.content = Edge(self.state)

    async def close(self) -> None:
        if self.state is not None:
            await self.state.close()

    def routes(self) -> dict[str, Route]:
        assert self.state is not None
        return admin.routes(self.state)

    def serves_demo(self) -> bool:
        return False
