"""One event loop's wake-ups for its sleeping players: a loop timer per slot of time, not per sleep.

Every virtual player sleeps until its next fetch is due, so a replay sleeps once per request.
`asyncio.sleep` costs a future, a timer handle (under uvloop also a libuv timer, pushed into and
popped out of its heap) and a getpid() system call (the running-loop check) each time. Here the
sleeps that end within the same SLOT_S share one timer, so a sleep costs a future and a list
append. A sleep ends at the end of its slot: at most SLOT_S later than a timer of its own would
have ended it, and no earlier (the player measures how late it woke anyway: Stats.late, and the
pacing verdict allows a whole segment).
"""

from __future__ import annotations

import asyncio
import math
import weakref

#: the width of a slot of wake-ups (s): uvloop's timers tick in milliseconds, and the shortest
#: segment a replay paces (runner.MIN_SEGMENT_REAL_S) is many slots long
SLOT_S = 0.002


class Pacer:
    """Sleeps on one event loop, woken a slot at a time."""

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    def sleep(self, delay: float) -> asyncio.Future[None]:
        """A future done `delay` seconds from now (rounded up to the end of its slot); the
        caller may cancel it (a player cancelled mid-sleep)."""
        loop = self._loop
        future: asyncio.Future[None] = loop.create_future()
        key = math.ceil((loop.time() + max(delay, 0.0)) / SLOT_S)
        waiting = self._slots.get(key)
        if waiting is None:
            self._slots[key] = [future]
            loop.call_at(key * SLOT_S, self._wake, key)
        else:
            waiting.append(future)
        return future

    def _wake(self, key: int) -> None:
        for future in self._slots.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def __len__(self) -> int:
        """Sleeps not yet woken (cancelled ones included until their slot comes)."""
        return sum(len(waiting) for waiting in self._slots.values())


_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer_of(loop: asyncio.AbstractEventLoop) -> Pacer:
    """The one pacer of `loop` (each replayer process runs one loop; tests run many in turn)."""
    pacer = _PACERS.get(loop)
    if pacer is None:
        pacer = _PACERS[loop] = Pacer(loop)
    return pacer
