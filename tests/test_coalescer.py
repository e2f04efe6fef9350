"""The coalescer on its own: one producer per key, waiters stream as bytes arrive, errors reach
everyone, the herd limit refuses without a second fetch, the fetch outlives its first client."""

from __future__ import annotations

import asyncio

import pytest

from edge360.core.errors import Overloaded, UpstreamError
from edge360.edge.coalescer import Coalescer, Flight, Head
from edge360.node.tasks import TaskGroup


async def test_one_producer_and_streaming_waiters() -> None:
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
    assert all(f is flights[0][0] for f, _ in flights)
    flight = flights[0][0]
    streams = [flight.stream() for _ in range(20)]
    firsts = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 5)
    assert firsts == [b"abc"] * 20 and not flight.done  # first bytes before the end
    release.set()
    rests = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 5)
    assert rests == [b"def"] * 20
    assert await flight.body() == b"abcdef"
    assert runs == 1 and waits == 19
    assert [c async for c in flight.stream(4)] == [b"ef"]
    await asyncio.sleep(0)
    assert c.get("k") is None  # gone once finished: the next miss starts afresh
    await tasks.close()


async def test_error_reaches_every_waiter_and_cuts_streams() -> None:
    tasks = TaskGroup()

    async def produce(flight: Flight) -> None:
        flight.set_head(Head(200, {}, 10))
        flight.append(b"12345")
        raise UpstreamError("broke off", kind="truncated")

    c = Coalescer(tasks, max_waiters=10)
    flight, _ = c.join("k", produce)
    other, _ = c.join("k", produce)
    assert other is flight
    got = b""
    with pytest.raises(UpstreamError):
        async for chunk in flight.stream():
            got += chunk
    assert got == b"12345"
    with pytest.raises(UpstreamError):
        await other.body()

    async def no_head(flight: Flight) -> None:
        raise UpstreamError("refused", kind="connect_error")
    f2, _ = c.join("k2", no_head)
    with pytest.raises(UpstreamError):
        await asyncio.wait_for(f2.wait_head(), 5)
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


async def test_fetch_continues_when_first_waiter_leaves() -> None:
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


async def test_an_unretained_flight_holds_a_window_not_the_body() -> None:
    """Once the producer says the body will not be stored, the flight keeps only what its
    slowest reader still needs, the producer waits for that reader beyond the window, a later
    miss starts its own fetch, and a reader arriving after bytes were let go is refused."""
    tasks = TaskGroup()
    chunk = b"x" * 1000
    produced = 0

    async def produce(flight: Flight) -> None:
        nonlocal produced
        flight.set_head(Head(200, {}, 100 * len(chunk)))
        flight.stop_retaining()
        for _ in range(100):
            flight.append(chunk)
            produced += 1
            await flight.room(window=5 * len(chunk))

    c = Coalescer(tasks, max_waiters=10)
    flight, leader = c.join("k", produce)
    assert leader
    await flight.wait_head()
    reader = flight.stream()
    got = [await anext(reader) for _ in range(3)]
    for _ in range(50):  # bounded: let the producer run ahead as far as it may
        await asyncio.sleep(0)
    assert produced <= 9  # the window (5) plus what was handed out, not all 100
    assert flight.size - flight.base <= 7 * len(chunk)
    other, started = c.join("k", produce)
    assert started and other is not flight  # no joining a relay whose start is gone
    with pytest.raises(UpstreamError):
        late = flight.stream(0)
        await anext(late)
    async for part in reader:
        got.append(part)
        assert flight.size - flight.base <= 7 * len(chunk)
    assert b"".join(got) == chunk * 100
    # the other flight's reader goes away: its producer gives up instead of filling memory
    first = other.stream()
    await anext(first)
    await first.aclose()
    for _ in range(50):
        if other.done:
            break
        await asyncio.sleep(0)
    assert other.done and isinstance(other.error, UpstreamError)
    await tasks.close()
