"""Small answers written together at the end of the event loop's turn, not one by one as each is
made.

Why: on a busy node the client side of most connections is asleep in epoll when its answer is
written, and a write that wakes a sleeping task on another core costs an inter-processor
interrupt, which under a hypervisor is a VM exit. Profiled on the 2-core benchmark machine
(docs/ARCHITECTURE.md, "One content plane"), waking the reader was 19 % of the edge's CPU on
small hits: each answer, written as soon as it was made, found the reader asleep again. Written
in one burst once every request of the turn was answered, the first write wakes the reader and
the rest find it running.

The outbox holds connections, not bytes: each connection keeps its own queued bytes and writes
them, before anything else it writes or a close, so its output stays in order
(http.protocol.Connection.flush).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Flushable(Protocol):
    """A connection with bytes queued for the end of the turn."""

    def flush(self) -> None: ...


class Outbox:
    """The connections of one event loop with bytes queued; one flush per turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[Flushable] = []
        self._scheduled = False

    def add(self, conn: Flushable) -> None:
        """`conn` has queued bytes: flush it once this turn's callbacks have run. call_soon runs
        after every I/O callback of the current turn, on uvloop (its idle phase) and on
        asyncio's loop (the ready queue) alike."""
        self._queued.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, []
        for conn in queued:
            conn.flush()
