"""The pathway order of content steering: which pathway a player should use, from each pathway's
exact viewer count against its capacity (docs/OVERLOAD.md, "Steering").

Each pathway is either up (its node answered its last poll) or down. An up pathway that reports
its sessions and capacity (an edge360 node with sessions.capacity) has a share of the fleet: its
capacity over the sum of the capacities of the pathways up. The order for one player:

1. pathways with room, by free capacity (the free share of their capacity, largest first; the
   configured order breaks ties; pathways whose load is unknown come after those with a known
   one);
2. full ones (no seat left for another viewer: sessions at or above capacity; the player's own
   pathway only when it holds more than its capacity, since one of those seats is the player's;
   a pathway whose egress headroom is below the player's measured throughput, `_HLS_throughput`,
   counts as full for that player);
3. pathways that are down, in the configured order.

The player's current pathway (`_HLS_pathway`) stays first while it has room and carries no more
than its share of the fleet's viewers (plus a little slack, so single viewers do not flap). When
it carries more, only the excess moves: each player of that pathway moves with probability
excess / viewers, decided by a stable draw from its session id, so a whole pathway never moves
at once. The same holds for a full pathway: only its viewers over its capacity move, and only
when another pathway has room. A new viewer goes where the shares most need one (`assign`).
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: viewers a pathway may carry over its share before any of them is moved: at least this many,
SLACK_VIEWERS = 1
#: ...or this share of the fleet's viewers
SLACK_SHARE = 0.02


@dataclass(frozen=True, slots=True)
class Pathway:
    """What the last poll of one pathway said."""

    id: str
    up: bool = True
    active: int | None = None  # seats in use (active + starting), None: unknown (not edge360)
    capacity: int = 0  # sessions.capacity; 0: not limited (or unknown)
    headroom: float | None = None  # egress bits/s left under server.egress_limit, None: unknown


def shares(paths: Sequence[Pathway]) -> dict[str, float]:
    """Each up pathway's share of the fleet: by capacity where every one up has a capacity,
    else equal shares."""
    up = [p for p in paths if p.up]
    if not up:
        return {}
    if all(p.capacity > 0 for p in up):
        total = sum(p.capacity for p in up)
        return {p.id: p.capacity / total for p in up}
    return {p.id: 1 / len(up) for p in up}


def _full(p: Pathway, current: bool, throughput: float | None) -> bool:
    if p.capacity > 0 and p.active is not None and (
            p.active > p.capacity or (p.active == p.capacity and not current)):
        return True
    return throughput is not None and p.headroom is not None and p.headroom < throughput


def _free(p: Pathway) -> tuple[int, float]:
    """Sort key, larger first: known loads before unknown ones, then the free share."""
    if p.active is None:
        return (0, 0.0)
    if p.capacity > 0:
        return (2, (p.capacity - p.active) / p.capacity)
    return (1, -float(p.active))


def order(paths: Sequence[Pathway], *, current: str | None = None,
          throughput: float | None = None, draw: float = 0.0) -> list[str]:
    """The pathway priority for one player (see the module docstring); `draw` in [0, 1) is the
    player's stable random number."""
    index = {p.id: i for i, p in enumerate(paths)}
    room = [p for p in paths if p.up and not _full(p, p.id == current, throughput)]
    full = [p for p in paths if p.up and p not in room]
    down = [p for p in paths if not p.up]
    room.sort(key=lambda p: (-_free(p)[0], -_free(p)[1], index[p.id]))
    full.sort(key=lambda p: (-_free(p)[0], -_free(p)[1], index[p.id]))
    here = next((p for p in room if p.id == current), None)
    if here is not None and not _moves(paths, here, draw):
        room.remove(here)
        room.insert(0, here)
    elif here is not None and len(room) > 1:
        room.remove(here)
        room.append(here)  # it moves: its pathway last among those with room
    crowded = next((p for p in full if p.id == current), None)
    if crowded is not None and not (room and _leaves(crowded, draw, throughput)):
        # only the excess of a full pathway leaves, and only for one with room: were every
        # player of it to move, the pathway they move to would be full in its turn (and the one
        # they left would still count them while their buffers play out), and back they come
        full.remove(crowded)
        room.insert(0, crowded)
    return [p.id for p in (*room, *full, *down)]


def _leaves(p: Pathway, draw: float, throughput: float | None) -> bool:
    """Whether a player of the full pathway `p` is one of those that leave: every one whose
    throughput it has no egress headroom for, else the share of its players over its capacity."""
    if throughput is not None and p.headroom is not None and p.headroom < throughput:
        return True
    if p.capacity > 0 and p.active:
        return draw < (p.active - p.capacity) / p.active
    return True


def _moves(paths: Sequence[Pathway], here: Pathway, draw: float) -> bool:
    """Whether a player of `here` is one of the excess its pathway carries over its share."""
    counted = [p for p in paths if p.up and p.active is not None]
    if here.active is None or not here.active or len(counted) < 2:
        return False
    share = shares(counted).get(here.id, 0.0)
    total = sum(p.active or 0 for p in counted)
    excess = here.active - share * total - max(SLACK_VIEWERS, SLACK_SHARE * total)
    return excess > 0 and draw < excess / here.active


def assign(paths: Sequence[Pathway], pending: Mapping[str, int] | None = None) -> str | None:
    """The pathway a new viewer should start on: among those with room, the one furthest below
    its share once this viewer is counted (`pending`: viewers sent to each since its last poll);
    ties in the configured order. None when no pathway is up."""
    pending = pending or {}
    counted = [p if p.active is None or not pending.get(p.id)
               else Pathway(p.id, p.up, p.active + pending[p.id], p.capacity, p.headroom)
               for p in paths]
    room = [p for p in counted if p.up and not _full(p, False, None)]
    if not room:
        ranked = order(paths)
        return ranked[0] if ranked and any(p.up for p in paths) else None
    share = shares([p for p in paths if p.up])
    load = {p.id: (p.active or 0) + (pending.get(p.id, 0) if p.active is None else 0)
            for p in counted}
    total = sum(load[p.id] for p in counted if p.up) + 1
    index = {p.id: i for i, p in enumerate(paths)}
    best = max(room, key=lambda p: (share.get(p.id, 0.0) * total - load[p.id], -index[p.id]))
    return best.id
