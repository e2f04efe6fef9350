"""One process's share of the viewers: each starts at its (compressed) arrival time and plays over
its own keep-alive connection (a wire.Line, from its source address), or, with `connections`, all
of them over one bounded shared pool per origin (replay/wire.py).

The replayer's CPU per request is what limits how many viewers a core carries, so two process-wide
costs are kept down while viewers play: aiohttp's client (replaced by the lean one) and the
garbage collector's full collections (see GC_THRESHOLDS)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge360.replay.model import Viewer
from edge360.replay.player import PlayerConfig, VirtualPlayer
from edge360.replay.stats import Stats
from edge360.replay.truth import Rule
from edge360.replay.wire import Client

#: garbage-collector thresholds while viewers play: the replayer allocates per request and holds
#: tens of objects per viewer, so with the defaults (700, 10, 10) full collections traverse every
#: viewer ever more often (a quarter of its CPU at 30,000 viewers); its garbage is seldom cyclic,
#: and young collections still run every 10,000 allocations
GC_THRESHOLDS = (10_000, 50, 1000)


@dataclass
class Share:
    """What one process needs to run its viewers."""

    viewers: list[Viewer]
    config: PlayerConfig
    epoch: float                  # monotonic time of simulated window start
    rule: Rule                    # the target's counting rule (truth.py)
    connections: int | None       # None: each viewer its own connection; N: a shared pool of N
    deadline: float | None        # monotonic time to stop at (--duration)
    sources: tuple[str, ...] = ()  # source addresses the viewers' connections spread over


async def run_share(share: Share, stop: asyncio.Event,
                    on_tick: Callable[[Stats], None] | None = None) -> Stats:
    """Start each viewer at its (compressed) arrival time; return what they measured."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return await _run_share(share, stop, on_tick)
    finally:
        gc.set_threshold(*thresholds)


async def _run_share(share: Share, stop: asyncio.Event,
                     on_tick: Callable[[Stats], None] | None) -> Stats:
    stats = Stats(rule=share.rule)
    tasks: set[asyncio.Task[None]] = set()
    speed, sources = share.config.speed, share.sources
    async with Client(limit=share.connections or 1, total_timeout=30,
                      connect_timeout=10) as http:
        async def visit(v: Viewer) -> None:
            if share.connections:
                await VirtualPlayer(http, v, share.config, stats).run()
                return
            line = http.line(sources[v.index % len(sources)] if sources else None)
            try:
                await VirtualPlayer(line, v, share.config, stats).run()
            finally:
                line.close()         # the viewer left: its connection goes with it

        async def scheduler() -> None:
            for v in share.viewers:
                due = share.epoch + v.start_s / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    stats.late(time.monotonic() - due)
                task = asyncio.create_task(visit(v))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))

        async def ticker() -> None:
            while on_tick is not None:
                on_tick(stats)
                await asyncio.sleep(1.0)

        sched = asyncio.create_task(scheduler())
        tick = asyncio.create_task(ticker())
        stopper = asyncio.create_task(stop.wait())
        wait_for: set[asyncio.Future[Any]] = {sched, stopper}
        timeout_s = None if share.deadline is None else max(share.deadline - time.monotonic(), 0)
        await asyncio.wait(wait_for, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for t in [sched, tick, stopper, *tasks]:
            t.cancel()
        await asyncio.gather(sched, tick, stopper, *tasks, return_exceptions=True)
    return stats
