"""The coalescer on its own: one producer per key, readers stream as bytes arrive, errors reach
everyone, the herd limit refuses without a second fetch, the fetch outlives its first client, a
reader reserved before the head never loses a byte, and memory stays a window per flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from edge360.core.errors import Overloaded, UpstreamError
from edge360.edge.coalescer import Coalescer, Flight, Head, Reader
from edge360.http.response import Part
from edge360.node.tasks import TaskGroup


async def read_all(reader: Reader, end: int | None = None) -> bytes:
    return b"".join([bytes(p) async for p in reader.parts(end)])  # type: ignore[arg-type]


async def settle(flight: Flight | None = None, rounds: int = 50) -> None:
    for _ in range(rounds):  # bounded: let the producer run as far as it may
        await asyncio.sleep(0)


async def test_one_producer_and_streaming_readers() -> None:
    tasks = TaskGroup()
    release = asyncio.Event()
    runs = 0

    async def produce(flight: Flight) -> None:
        nonlocal runs
        runs += 1
        flight.set_head(Head(200, {}, 6))
        flight.append(b"abc")
        await release.wait()
        flight.append(b"def")

    waits = 0

    def on_wait() -> None:
        nonlocal waits
        waits += 1
    c = Coalescer(tasks, max_waiters=100, on_wait=on_wait)
    flights = [c.join("k", produce) for _ in range(20)]
    assert [leader for _, leader in flights] == [True] + [False] * 19
    flight = flights[0][0]
    assert all(f is flight for f, _ in flights)
    readers = [flight.reserve(0) for _ in range(20)]
    streams = [r.parts() for r in readers if r is not None]
    firsts = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 5)
    assert firsts == [b"abc"] * 20 and not flight.done  # first bytes before the end
    release.set()
    rests = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 5)
    assert rests == [b"def"] * 20
    assert await flight.body() == b"abcdef"
    assert runs == 1 and waits == 19
    late = flight.reserve(4)
    assert late is not None and await read_all(late) == b"ef"
    await settle()
    assert c.get("k") is None  # gone once finished: the next miss starts afresh
    await tasks.close()


async def test_error_reaches_every_reader_and_cuts_streams() -> None:
    tasks = TaskGroup()

    async def produce(flight: Flight) -> None:
        flight.set_head(Head(200, {}, 10))
        flight.append(b"12345")
        raise UpstreamError("broke off", kind="truncated")

    c = Coalescer(tasks, max_waiters=10)
    flight, _ = c.join("k", produce)
    other, _ = c.join("k", produce)
    assert other is flight
    reader = flight.reserve(0)
    assert reader is not None
    got = b""
    with pytest.raises(UpstreamError):
        async for chunk in reader.parts():
            got += bytes(chunk)  # type: ignore[arg-type]
    assert got == b"12345"
    with pytest.raises(UpstreamError):
        await other.body()

    async def no_head(flight: Flight) -> None:
        raise UpstreamError("refused", kind="connect_error")
    f2, _ = c.join("k2", no_head)
    with pytest.raises(UpstreamError):
        await asyncio.wait_for(f2.wait_head(), 5)
    await tasks.close()


async def test_a_body_that_ends_early_is_an_error_for_a_bounded_read() -> None:
    tasks = TaskGroup()

    async def produce(flight: Flight) -> None:
        flight.set_head(Head(200, {}, None))
        flight.append(b"abc")

    c = Coalescer(tasks, max_waiters=10)
    flight, _ = c.join("k", produce)
    reader = flight.reserve(0)
    assert reader is not None
    with pytest.raises(UpstreamError):
        await read_all(reader, 10)
    await tasks.close()


async def test_herd_limit_refuses_without_second_fetch() -> None:
    tasks = TaskGroup()
    release = asyncio.Event()
    runs = 0

    async def produce(flight: Flight) -> None:
        nonlocal runs
        runs += 1
        await release.wait()
        flight.set_head(Head(200, {}, 0))

    c = Coalescer(tasks, max_waiters=3)
    for _ in range(3):
        c.join("k", produce)
    with pytest.raises(Overloaded) as e:
        c.join("k", produce)
    assert e.value.status == 503 and e.value.headers["Retry-After"] == "1"
    release.set()
    flight = c.get("k")
    assert flight is not None
    await asyncio.wait_for(flight.body(), 5)
    assert runs == 1
    await tasks.close()


async def test_fetch_continues_when_first_reader_leaves() -> None:
    tasks = TaskGroup()
    release = asyncio.Event()

    async def produce(flight: Flight) -> None:
        flight.set_head(Head(200, {}, 2))
        await release.wait()
        flight.append(b"ok")

    c = Coalescer(tasks, max_waiters=3)
    flight, _ = c.join("k", produce)
    first = asyncio.ensure_future(flight.body())
    await asyncio.sleep(0)
    first.cancel()  # the first client disconnects
    late, leader = c.join("k", produce)
    assert not leader
    release.set()
    assert await asyncio.wait_for(late.body(), 5) == b"ok"
    await tasks.close()


async def test_a_reader_reserved_before_the_head_never_loses_a_byte() -> None:
    """The herd through a shield: readers join while the head is unknown; the producer then
    learns the body will not be kept and sends it as fast as it can. Every reader that joined
    before the head gets every byte; one that comes after bytes were let go is refused before
    any head is sent (None), so it starts its own fetch instead of being cut."""
    tasks = TaskGroup()
    head_known = asyncio.Event()
    chunk = b"y" * 1000

    async def produce(flight: Flight) -> None:
        await head_known.wait()
        flight.set_head(Head(200, {}, 50 * len(chunk)))
        flight.window_only()
        for _ in range(50):
            flight.append(chunk)
            await flight.room()

    c = Coalescer(tasks, max_waiters=100)
    flight, _ = c.join("k", produce)
    flight.window = 4 * len(chunk)
    readers = [flight.reserve(0) for _ in range(5)]
    assert all(r is not None for r in readers)
    head_known.set()
    bodies = await asyncio.wait_for(asyncio.gather(
        *(read_all(r) for r in readers if r is not None)), 10)
    assert bodies == [chunk * 50] * 5
    assert flight.base > 0
    assert flight.reserve(0) is None  # too late for this flight: its own fetch, decided now
    await tasks.close()


async def test_a_relay_holds_a_window_and_waits_for_its_slowest_reader() -> None:
    """A body that is not stored keeps only what its slowest reader still needs; the producer
    waits for that reader beyond the window, and gives up when every reader went away."""
    tasks = TaskGroup()
    chunk = b"x" * 1000
    produced = 0

    async def produce(flight: Flight) -> None:
        nonlocal produced
        flight.set_head(Head(200, {}, 100 * len(chunk)))
        flight.window_only()
        for _ in range(100):
            flight.append(chunk)
            produced += 1
            await flight.room()

    c = Coalescer(tasks, max_waiters=10)
    flight, _ = c.join("k", produce)
    flight.window = 5 * len(chunk)
    reader = flight.reserve(0)
    assert reader is not None
    stream = reader.parts()
    got = [await anext(stream) for _ in range(3)]
    await settle()
    assert produced <= 9  # the window plus what was handed out, not all 100
    assert flight.size - flight.base <= 7 * len(chunk)
    async for part in stream:
        got.append(part)
        assert flight.size - flight.base <= 7 * len(chunk)
    assert b"".join(bytes(g) for g in got) == chunk * 100  # type: ignore[arg-type]
    # another relay whose one reader leaves: its producer stops instead of filling memory
    other = c.start("k2", produce)
    other.window = 5 * len(chunk)
    leaving = other.reserve(0)
    assert leaving is not None
    await anext(leaving.parts())
    leaving.close()
    for _ in range(100):
        if other.done:
            break
        await asyncio.sleep(0)
    assert other.done and isinstance(other.error, UpstreamError)
    await tasks.close()


async def test_a_body_stored_as_it_arrives_never_waits_and_readers_fall_back() -> None:
    """A big storable body: the producer stores it as it arrives and never waits; the flight
    holds at most a window past what is stored, and a reader behind it (or a late one, from
    byte 0) reads the stored bytes."""
    tasks = TaskGroup()
    chunk = b"z" * 1000
    stored: dict[int, bytes] = {}
    piece = 4 * len(chunk)

    async def fallback(pos: int) -> Sequence[Part]:
        n = pos // piece
        return (memoryview(stored[n])[pos - n * piece:],)

    async def produce(flight: Flight) -> None:
        flight.set_head(Head(200, {}, 40 * len(chunk)))
        flight.window_only(fallback)
        buf = b""
        for _ in range(40):
            flight.append(chunk)
            buf += chunk
            if len(buf) == piece:
                stored[len(stored)] = buf
                buf = b""
                flight.stored_until(len(stored) * piece)
            await flight.room()
            assert flight.size - flight.base <= piece + len(chunk)

    c = Coalescer(tasks, max_waiters=10)
    flight, _ = c.join("k", produce)
    flight.window = 2 * len(chunk)
    slow = flight.reserve(0)
    assert slow is not None
    await flight.finished()  # nobody read: the producer never waited
    assert await read_all(slow) == chunk * 40
    late = flight.reserve(0)
    assert late is not None and await read_all(late, 5000) == chunk * 5
    await tasks.close()
