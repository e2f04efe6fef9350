"""Request coalescing: one upstream fetch per object key, however many clients ask at once.

The first miss for a key starts a Flight, whose producer runs as an owned background task (so it
continues for the others when the first client goes away); every later miss joins it as a waiter.
A waiter sees the head (status, headers) as soon as it is known and then streams the body chunks
as they arrive, from the first byte, never after the whole object. There is no timeout after which
waiters go upstream on their own; a herd beyond `max_waiters` is refused with 503 + Retry-After.
A failed fetch reaches every waiter as the same error; a body that broke off ends every waiter's
stream with that error, so their responses are cut short rather than ended cleanly.

A flight keeps its whole body (late joiners start from byte 0, and the producer stores it) until
its producer says the body will not be stored (`stop_retaining`): then it holds only what some
reader still needs, at most RELAY_WINDOW bytes, and the producer waits (`room`) while the slowest
reader catches up, so a huge uncacheable object costs a window of memory, not its size. Such a
flight takes no new waiters (a later miss starts its own fetch), and one nobody reads any more
is abandoned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from edge360.core.errors import Overloaded, UpstreamError
from edge360.node.tasks import TaskGroup

#: bytes an unretained flight holds at most before its producer waits for the slowest reader
RELAY_WINDOW = 8 * 1024 * 1024
#: seconds an unretained flight's full window waits for its first reader
FIRST_READER = 10.0


@dataclass(slots=True)
class Head:
    """What a flight learned before its body: the upstream status and (lower-cased) headers,
    the body length when declared, and flags the producer sets for the waiters."""

    status: int
    headers: dict[str, str]
    length: int | None = None
    #: the stored entry was freshened by a 304: waiters serve from the cache
    revalidated: bool = False


@dataclass(eq=False, slots=True)
class Flight:
    """One in-flight fetch: its head, the body chunks so far, and whether/how it ended."""

    key: str
    waiters: int = 1
    head: Head | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False
    error: BaseException | None = None
    #: whatever the producer wants to hand the waiters at the end (e.g. a stored entry)
    result: Any = None
    #: False once the body will not be stored: only a window of it is kept (stop_retaining)
    retain: bool = True
    #: body offset of chunks[0] and how many chunks were dropped before it (unretained flights)
    base: int = 0
    dropped: int = 0
    #: readers of an unretained flight: their next chunk index, by reader
    _cursors: dict[object, int] = field(default_factory=dict)
    _read: bool = False  # a reader has streamed from this flight
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # -- producer side ---------------------------------------------------------------------

    def set_head(self, head: Head) -> None:
        self.head = head
        self._wake()

    def append(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append(chunk)
            self.size += len(chunk)
            self._wake()

    def stop_retaining(self) -> None:
        """The body will not be stored: keep only what readers still need from now on."""
        self.retain = False
        self._trim()

    async def room(self, window: int = RELAY_WINDOW, first_reader: float = FIRST_READER) -> None:
        """An unretained flight's producer waits here while more than `window` bytes are held
        for the slowest reader. With no reader left it gives up (nobody wants the bytes); before
        the first reader came it waits `first_reader` seconds for one."""
        while not self.retain and self.size - self.base > window:
            if not self._cursors:
                if self._read:
                    raise UpstreamError("every reader went away", kind="abandoned")
                try:
                    await asyncio.wait_for(self._changed.wait(), first_reader)
                except TimeoutError:
                    raise UpstreamError("nobody came to read", kind="abandoned") from None
                continue
            await self._changed.wait()

    def _trim(self) -> None:
        if self.retain:
            return
        keep = min(self._cursors.values(), default=self.dropped + len(self.chunks))
        drop = keep - self.dropped
        if drop > 0:
            self.base += sum(len(c) for c in self.chunks[:drop])
            del self.chunks[:drop]
            self.dropped = keep
            self._wake()  # the producer may have room now

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self._wake()

    def _wake(self) -> None:
        # one event per change: waiters re-check state, then wait on the next one
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- waiter side -----------------------------------------------------------------------

    async def wait_head(self) -> Head:
        """The head, once known; raises the fetch's error if it failed before one arrived."""
        while self.head is None:
            if self.done:
                raise self.error or UpstreamError("upstream gave no answer")
            await self._changed.wait()
        return self.head

    async def stream(self, start: int = 0) -> AsyncIterator[bytes]:
        """Body bytes from offset `start` on, as they arrive. Ends cleanly only when the
        whole body arrived; raises the fetch's error if it broke off (or, on an unretained
        flight, if the bytes from `start` were already let go)."""
        if start < self.base:
            raise UpstreamError("joined an uncached relay too late", kind="abandoned")
        me = object()
        index, offset = self.dropped, self.base  # absolute chunk index and its body offset
        self._cursors[me] = index
        self._read = True
        self._wake()  # a producer may be waiting for its first reader
        try:
            while True:
                while index - self.dropped < len(self.chunks):
                    chunk = self.chunks[index - self.dropped]
                    end = offset + len(chunk)
                    if end > start:
                        yield chunk[max(0, start - offset):] if start > offset else chunk
                    index, offset = index + 1, end
                    if not self.retain:
                        self._cursors[me] = index
                        self._trim()
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                await self._changed.wait()
        finally:
            del self._cursors[me]
            self._trim()

    async def body(self) -> bytes:
        """The whole body once the fetch ended (raises its error if it failed)."""
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        if self.base:
            raise UpstreamError("the body of an uncached relay is not kept", kind="abandoned")
        return b"".join(self.chunks)


Producer = Callable[[Flight], Coroutine[Any, Any, None]]


class Coalescer:
    """The in-flight fetches of one process, by key (bounded by `max_flights`)."""

    def __init__(self, tasks: TaskGroup, *, max_waiters: int, max_flights: int = 100_000,
                 on_wait: Callable[[], None] | None = None) -> None:
        self._tasks = tasks
        self._flights: dict[str, Flight] = {}
        self.max_waiters = max_waiters
        self.max_flights = max_flights
        self._on_wait = on_wait

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        return self._flights.get(key)

    def join(self, key: str, producer: Producer) -> tuple[Flight, bool]:
        """The flight for `key` and whether this call started it. A new flight runs
        `producer(flight)` in the background. Raises Overloaded when the key already has
        `max_waiters` waiters (never a second fetch) or too many keys are in flight."""
        flight = self._flights.get(key)
        if flight is not None and flight.retain:
            if flight.waiters >= self.max_waiters:
                raise Overloaded("too many waiters for one object", retry_after=1)
            flight.waiters += 1
            if self._on_wait is not None:
                self._on_wait()
            return flight, False
        if len(self._flights) >= self.max_flights:
            raise Overloaded("too many upstream fetches in flight", retry_after=1)
        flight = Flight(key)
        self._flights[key] = flight
        task = self._tasks.spawn(self._run(flight, producer(flight)), f"fetch {key[:80]}")
        if task is None:  # shutting down
            self._flights.pop(key, None)
            raise Overloaded("shutting down", retry_after=1)
        return flight, True

    async def _run(self, flight: Flight, produce: Coroutine[Any, Any, None]) -> None:
        try:
            await produce
            flight.finish()
        except asyncio.CancelledError:
            flight.finish(UpstreamError("fetch cancelled at shutdown"))
            raise
        except UpstreamError as e:
            flight.finish(e)
        except Exception as e:
            flight.finish(UpstreamError(f"fetch failed: {e!r}", kind="invalid"))
            raise
        finally:
            # a flight leaves the table when it ends: the next miss starts afresh
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
