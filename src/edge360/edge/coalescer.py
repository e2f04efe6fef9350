"""Request coalescing: one upstream fetch per object key, however many clients ask at once.

The first miss for a key starts a Flight, whose producer runs as an owned background task (so it
continues for the others when the first client goes away); later misses join it. A herd beyond
`max_waiters` is refused with 503 + Retry-After, never given its own fetch. A failed fetch
reaches every reader as the same error; a body that broke off ends every reader's stream with it,
so their answers are cut short, never ended cleanly.

Memory is bounded per flight whatever the object's size (docs/ARCHITECTURE.md, "Memory"): a flight
holds a window of the body past its slowest reader. A small body (at most one piece) and a
playlist are kept whole (`keep_all`): they are stored whole at the end. A bigger storable body is
stored piece by piece as it arrives; a reader that falls behind the window reads the pieces
already stored (`fallback`), so it never holds the others back. A body that is not stored (a
relay) has no such fallback: its producer waits for the slowest reader.

Whether a request joins a flight, and from which byte, is decided before its response head is
sent (`reserve`): a reader is registered at once, so the bytes it needs can no longer be let go.
A request the flight cannot serve any more gets None and starts its own fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

from edge360.core.errors import Overloaded, UpstreamError
from edge360.http.response import FileSpan, Part
from edge360.node.tasks import TaskGroup

#: bytes a flight holds past its slowest reader before its producer waits (or trims)
WINDOW: Final = 8 * 1024 * 1024
#: seconds a relay's full window waits for its first reader
FIRST_READER: Final = 10.0

#: gives the stored bytes from an offset on (the pieces a flight already stored)
Fallback = Callable[[int], Awaitable[Sequence[Part]]]


@dataclass(slots=True)
class Head:
    """What a flight learned before its body: the upstream status and (lower-cased) headers,
    the body length when declared, and whether a 304 refreshed the stored copy."""

    status: int
    headers: dict[str, str]
    length: int | None = None
    revalidated: bool = False


class Reader:
    """One reader's place in a flight (see Flight.reserve); `close()` lets its bytes go."""

    __slots__ = ("_flight", "pos")

    def __init__(self, flight: Flight, pos: int) -> None:
        self._flight = flight
        self.pos = pos

    def close(self) -> None:
        self._flight._leave(self)

    def seek(self, pos: int) -> None:
        """Move forward to `pos` (the bytes before it are not wanted)."""
        if pos > self.pos:
            self.pos = pos
            self._flight._moved()

    async def parts(self, end: int | None = None) -> AsyncIterator[Part]:
        """The body from this reader's position up to `end` (exclusive; None: to the end), as it
        arrives. Raises the fetch's error when it broke off."""
        flight = self._flight
        while end is None or self.pos < end:
            if self.pos < flight.base:
                if flight.fallback is None or self.pos >= flight.stored:
                    raise UpstreamError("the body is gone from the flight", kind="abandoned")
                for stored in await flight.fallback(self.pos):
                    size = stored.count if isinstance(stored, FileSpan) else len(stored)
                    wanted = size if end is None else min(size, end - self.pos)
                    self.pos += wanted
                    yield stored if wanted == size else _head_of(stored, wanted)
                flight._moved()
                continue
            if self.pos < flight.size:
                data = flight._slice(self.pos, end)
                self.pos += len(data)
                flight._moved()
                yield data
                continue
            if flight.done:
                if flight.error is not None:
                    raise flight.error
                if end is not None:
                    raise UpstreamError("the body ended early", kind="truncated")
                return
            await flight._changed.wait()


def _head_of(part: Part, count: int) -> Part:
    """The first `count` bytes of a part."""
    if isinstance(part, FileSpan):
        view = part.view[:count] if part.view is not None else None
        return FileSpan(part.fd, part.offset, count, view=view)
    return memoryview(part)[:count]


class Flight:
    """One in-flight fetch: its head, a window of its body, its readers, and how it ended."""

    def __init__(self, key: str, *, window: int = WINDOW) -> None:
        self.key = key
        self.waiters = 1
        self.head: Head | None = None
        self.done = False
        self.error: BaseException | None = None
        #: what the producer hands the waiters at the end (a stored (object, body) pair)
        self.result: Any = None
        #: kept whole (small bodies, playlists); else a window past the slowest reader
        self.keep_all = True
        #: stored bytes from an offset on, once the producer stores pieces as they arrive
        self.fallback: Fallback | None = None
        self.stored = 0  # bytes [0, stored) are stored and readable through `fallback`
        self.window = window
        self.base = 0  # body offset of chunks[0]
        self.size = 0  # body bytes received so far
        self.chunks: list[bytes] = []
        self._readers: set[Reader] = set()
        self._read = False  # a reader has come (an unread relay may be abandoned after it)
        self._changed = asyncio.Event()

    # -- producer side

    def set_head(self, head: Head) -> None:
        self.head = head
        self._wake()

    def append(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append(chunk)
            self.size += len(chunk)
            self._wake()

    def window_only(self, fallback: Fallback | None = None) -> None:
        """From now on keep a window only; `fallback` (a body stored as it arrives) serves the
        readers behind it, else the producer waits for them (a relay)."""
        self.keep_all = False
        self.fallback = fallback
        self._trim()

    def stored_until(self, offset: int) -> None:
        """Bytes [0, offset) are stored now (readable through the fallback)."""
        self.stored = offset
        self._trim()

    async def room(self, first_reader: float = FIRST_READER) -> None:
        """The producer of a relay waits here while more than a window is held for its slowest
        reader. A relay nobody reads any more is abandoned; before its first reader came it
        waits `first_reader` seconds for one. A body stored as it arrives never waits: its
        readers behind the window read what is stored."""
        while not self.keep_all and self.fallback is None:
            if not self._readers and self._read:
                raise UpstreamError("every reader went away", kind="abandoned")
            self._trim()
            if self.size - self.base <= self.window:
                return
            if not self._readers:
                try:
                    await asyncio.wait_for(self._changed.wait(), first_reader)
                except TimeoutError:
                    raise UpstreamError("nobody came to read", kind="abandoned") from None
                continue
            await self._changed.wait()

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self._wake()

    # -- waiter side

    def reserve(self, start: int = 0) -> Reader | None:
        """A reader from byte `start`, registered now so its bytes stay; None when the flight
        let them go and cannot get them back (the caller fetches on its own)."""
        if start < self.base and (self.fallback is None or start >= self.stored):
            return None
        reader = Reader(self, start)
        self._readers.add(reader)
        self._read = True
        self._wake()  # a producer may be waiting for its first reader
        return reader

    async def wait_head(self) -> Head:
        """The head, once known; raises the fetch's error if it failed before one arrived."""
        while self.head is None:
            if self.done:
                raise self.error or UpstreamError("upstream gave no answer")
            await self._changed.wait()
        return self.head

    async def finished(self) -> None:
        """Wait for the end of the fetch; raises its error."""
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    async def body(self) -> bytes:
        """The whole body of a flight that kept it (small bodies, playlists)."""
        await self.finished()
        if self.base or not self.keep_all:
            raise UpstreamError("the body of a big object is not kept whole", kind="abandoned")
        return b"".join(self.chunks)

    # -- internals

    def _slice(self, pos: int, end: int | None) -> bytes | memoryview:
        offset = self.base
        for chunk in self.chunks:
            if pos < offset + len(chunk):
                lo = pos - offset
                hi = len(chunk) if end is None else min(len(chunk), end - offset)
                return chunk if lo == 0 and hi == len(chunk) else memoryview(chunk)[lo:hi]
            offset += len(chunk)
        return b""

    def _leave(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.discard(reader)
            self._moved()

    def _moved(self) -> None:
        self._trim()
        self._wake()

    def _trim(self) -> None:
        if self.keep_all:
            return
        holding = [r.pos for r in self._readers if self.fallback is None or r.pos >= self.stored]
        keep = min(holding, default=self.size)
        if self.fallback is not None:
            keep = min(keep, self.stored)  # what is not stored yet stays readable
        while self.chunks and self.base + len(self.chunks[0]) <= keep:
            self.base += len(self.chunks.pop(0))

    def _wake(self) -> None:
        # one event per change: waiters re-check state, then wait on the next one
        event, self._changed = self._changed, asyncio.Event()
        event.set()


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
        if flight is not None:
            if flight.waiters >= self.max_waiters:
                raise Overloaded("too many waiters for one object", retry_after=1)
            flight.waiters += 1
            if self._on_wait is not None:
                self._on_wait()
            return flight, False
        return self.start(key, producer), True

    def start(self, key: str, producer: Producer) -> Flight:
        """A new flight for `key`, not shared with later joiners when another is in flight
        already (a request the running flight could no longer serve)."""
        if len(self._flights) >= self.max_flights:
            raise Overloaded("too many upstream fetches in flight", retry_after=1)
        flight = Flight(key)
        self._flights.setdefault(key, flight)
        task = self._tasks.spawn(self._run(flight, producer(flight)), f"fetch {key[:80]}")
        if task is None:  # shutting down
            if self._flights.get(key) is flight:
                del self._flights[key]
            raise Overloaded("shutting down", retry_after=1)
        return flight

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
