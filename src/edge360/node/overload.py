"""What one process knows for overload control (docs/OVERLOAD.md): the admission keys and, with
one process, the node's queue; the ladders of the masters it served and the egress they project;
the pathways' last polled state for content steering; and the figures /api/stats and /metrics
show.

With `--workers N` the queue is the hub's (run.hub), so admission is decided node-wide; the
shaping projection and the pathway states are each worker's own reading of node-wide figures
(the hub's view of the sessions, every pathway's /api/stats).

New viewers sent to each pathway are kept until a poll can show them (`sent`): a viewer sent
before a poll began is in that poll only once it has reached its pathway, which for this node is
at once (its session opens with the master) and for another pathway takes its player's first
request there and that node's counting (AWAY_TRANSIT_S). Read too early, a pathway that viewers
are being sent to looks emptier than it is and gets more than its share. And each of N workers
sees about one N-th of the newcomers and sends them by the same rule, so a worker counts each of
its own sends N times: otherwise every worker would fill the same gap in the shares, N times
over.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge360.config.schema import Config
from edge360.core.lru import LRU
from edge360.core.steering import Pathway
from edge360.hls import shape
from edge360.security import tickets
from edge360.security.tokens import Key
from edge360.sessions.admission import Queue, Seats

log = logging.getLogger("edge360.overload")

#: seconds an admitted ticket lets its viewer back in, here or on any node of the fleet
ADMITTED_TTL = 86400.0
#: (title, rendition) ladders remembered at most
MAX_RUNGS = 4096
#: seconds a viewer sent to another pathway may take to show in that pathway's /api/stats
AWAY_TRANSIT_S = 1.0
#: sends remembered per pathway at most (a second or two of a release-day burst)
MAX_SENT = 65536


@dataclass(slots=True)
class PathwayState:
    """One pathway as its last poll saw it (set by ops.steering)."""

    pathway: Pathway
    node_id: str | None = None  # the node's id, when it is an edge360 node
    steering: bool = False  # it answers /steering itself


class Configured(Protocol):
    """What holds the node's current config (NodeState: a reload replaces it whole)."""

    @property
    def config(self) -> Config: ...


@dataclass(slots=True)
class OverloadState:
    """See the module docstring; the node's `overload` (NodeState)."""

    #: read on every playlist answer: an attribute, not a callback (a lambda defined in an
    #: interpreted module would be an interpreted call from this compiled one)
    holder: Configured
    keys: tuple[Key, ...] = ()
    #: tickets are signed only with keys of this node's own (no EDGE360_ADMISSION_KEYS)
    local_keys: bool = False
    #: the node's queue and session table with one process; None when the hub keeps them
    queue: Queue | None = None
    seats: Seats | None = None
    node_id: str = field(default_factory=lambda: secrets.token_hex(6))
    rungs: LRU[tuple[str, str], int] = field(default_factory=lambda: LRU(MAX_RUNGS))
    projected: float = 0.0  # bits/s, refreshed every second
    paths: dict[str, PathwayState] = field(default_factory=dict)
    #: new viewers sent to each pathway lately: (node clock, viewers it stands for), and their
    #: sum (the pending count; between polls every send is newer than what a poll may show)
    sent: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    polled_at: float = -math.inf  # when the poll that set `paths` began
    #: the hub's admission figures (capacity, queued, node id) with --workers N
    remote: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, holder: Configured, seats: Seats | None) -> OverloadState:
        """The state of a process; `seats`: the node's session table when this process holds
        it (one process), None with --workers N (the hub holds it)."""
        keys = tickets.read_keys(holder.config)
        local = not keys or tickets.is_node_key(keys)
        if not keys:
            keys = tickets.node_key()
        state = cls(holder, keys, local)
        if seats is not None:
            state.queue, state.seats = Queue(state.node_id), seats
        for pid, _base in holder.config.steering.pathways:
            state.paths[pid] = PathwayState(Pathway(pid, up=True))
        return state

    # -- what is on

    @property
    def capacity(self) -> int:
        return self.holder.config.sessions.capacity

    @property
    def tickets(self) -> bool:
        """Whether admitted viewers carry tickets: with a capacity, or with fleet keys."""
        return self.capacity > 0 or not self.local_keys

    @property
    def steering(self) -> bool:
        return bool(self.holder.config.steering.pathways)

    @property
    def shaping_limit(self) -> int:
        return self.holder.config.server.egress_limit

    @property
    def active(self) -> bool:
        """Whether any playlist needs looking at (admission, shaping or steering)."""
        config = self.holder.config  # read once: this is asked on every playlist answer
        return (config.sessions.capacity > 0 or bool(config.steering.pathways)
                or config.server.egress_limit > 0 or not self.local_keys)

    def own_id(self) -> str:
        """This node's id as /api/stats reports it (the hub's with --workers N)."""
        return str(self.remote.get("node_id") or self.node_id)

    # -- keys

    def reload_keys(self) -> str:
        """SIGHUP: read the admission keys again (a set that does not parse keeps the old)."""
        keys = tickets.read_keys(self.holder.config)
        if keys:
            self.keys, self.local_keys = keys, tickets.is_node_key(keys)
        elif not self.local_keys:
            log.warning("admission keys are gone; keeping the %d loaded before", len(self.keys))
        return f"{len(self.keys)} admission keys"

    # -- shaping

    def learn_ladder(self, title: str, master_path: str, text: str) -> dict[str, int]:
        """Remember the BANDWIDTH of each rendition a master lists; its ladder."""
        found = shape.ladder(text, master_path, title)
        for label, bandwidth in found.items():
            self.rungs.put((title, label), bandwidth)
        return found

    def project(self, active_by_label: dict[tuple[str, str], int]) -> float:
        """The egress the active sessions draw, by their renditions' BANDWIDTH (once a second)."""
        rungs = {label: bw for label in active_by_label if (bw := self.rungs.get(label))}
        self.projected = shape.projected(active_by_label.items(), rungs)
        return self.projected

    def cap(self, ladder: dict[str, int]) -> int | None:
        """The highest BANDWIDTH a new viewer of this ladder gets now; None: not shaping."""
        return shape.cap(ladder.values(), self.projected, self.shaping_limit)

    # -- steering

    def pathways(self) -> list[Pathway]:
        return [s.pathway for s in self.paths.values()]

    def polled(self, fresh: dict[str, PathwayState], began: float) -> None:
        """A poll begun at `began` read every pathway (ops.steering.Poller): the sends it may
        show are dropped from the pending counts."""
        self.paths, self.polled_at = fresh, began
        for pid, sends in self.sent.items():
            since = self._since(pid)
            while sends and sends[0][0] < since:
                self.unseen[pid] -= sends.popleft()[1]

    def note_sent(self, pid: str, now: float) -> None:
        """A new viewer was sent to pathway `pid` (module docstring: it stands for N)."""
        sends = self.sent.setdefault(pid, deque())
        if len(sends) >= MAX_SENT:
            self.unseen[pid] -= sends.popleft()[1]
        n = max(1, self.holder.config.server.workers)
        sends.append((now, n))
        self.unseen[pid] = self.unseen.get(pid, 0) + n

    def pending(self) -> dict[str, int]:
        """The viewers sent to each pathway that its last poll may not show yet."""
        return {pid: self.unseen.get(pid, 0) for pid in self.paths}

    def _since(self, pid: str) -> float:
        away = pid != self.own_pathway()
        return self.polled_at - (AWAY_TRANSIT_S if away else 0.0)

    def own_pathway(self) -> str | None:
        """The pathway that is this node (its poll reported this node's id), if any."""
        me = self.own_id()
        return next((pid for pid, s in self.paths.items() if s.node_id == me), None)

    def base(self, pathway: str) -> str | None:
        return dict(self.holder.config.steering.pathways).get(pathway)

    # -- figures

    def figures(self, now: float) -> dict[str, Any]:
        """What /api/stats adds (docs/OVERLOAD.md, "Figures")."""
        out: dict[str, Any] = {"node_id": self.own_id()}
        hold = self.holder.config.sessions.queue_hold
        if self.capacity > 0:
            queued = self.queue.waiting(now, hold) if self.queue is not None \
                else int(self.remote.get("queued", 0))
            out.update(capacity=self.capacity, sessions_queued=queued)
        limit = self.shaping_limit
        if limit > 0:
            out.update(egress_limit=limit, egress_projected=round(self.projected),
                       egress_cap=self.cap(self._ladder_union()))
        if self.steering:
            out["steering"] = {pid: {"up": s.pathway.up, "active": s.pathway.active,
                                     "capacity": s.pathway.capacity}
                               for pid, s in self.paths.items()}
        return out

    def _ladder_union(self) -> dict[str, int]:
        return {f"{t}/{r}": bw for (t, r), bw in self.rungs.items()}
