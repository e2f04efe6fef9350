"""The replayer's shared wake-ups (replay/pacer.py): never early, at most a slot late, one loop
timer per slot however many players sleep into it, and a cancelled sleep harms no other."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from edge360.replay.pacer import SLOT_S, Pacer, pacer_of


def test_sleeps_end_after_their_time_and_within_a_slot_of_it() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(loop)
        late: list[float] = []

        async def one(delay: float) -> None:
            began = loop.time()
            await pacer.sleep(delay)
            late.append(loop.time() - began - delay)

        await asyncio.gather(*(one(0.01 + i * 0.0007) for i in range(40)))
        return late

    late = asyncio.run(main())
    assert len(late) == 40
    # the loop's clock ticks in whole milliseconds under uvloop; the default loop's is exact
    assert min(late) >= -0.001
    assert max(late) < SLOT_S + 0.05   # a slot, plus a busy test machine's scheduling


def test_the_sleeps_of_one_slot_share_one_loop_timer() -> None:
    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        timers = 0
        real = loop.call_at

        def counting(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return real(when, callback, *args)

        loop.call_at = counting  # type: ignore[method-assign,assignment]
        pacer = Pacer(loop)
        # 300 sleeps due within 3 slots of each other: at most 4 timers (the span may straddle
        # one more slot boundary), where asyncio.sleep would arm 300; the loop's clock moves
        # while they are made (a busy machine), and each slot it moved on may add one
        began = loop.time()
        sleeps = [pacer.sleep(0.05 + (i % 3) * SLOT_S) for i in range(300)]
        moved = math.ceil((loop.time() - began) / SLOT_S)
        pending = len(pacer)
        await asyncio.gather(*sleeps)
        return timers, moved, pending

    timers, moved, pending = asyncio.run(main())
    assert pending == 300
    assert 1 <= timers <= 4 + moved


def test_a_cancelled_sleep_leaves_the_others_of_its_slot_to_wake() -> None:
    async def main() -> tuple[bool, bool, int]:
        pacer = Pacer(asyncio.get_running_loop())
        gone, kept = pacer.sleep(0.02), pacer.sleep(0.02)
        gone.cancel()
        await kept
        await asyncio.sleep(SLOT_S * 2)
        return gone.cancelled(), kept.done(), len(pacer)

    cancelled, woke, left = asyncio.run(main())
    assert cancelled and woke
    assert left == 0                   # the slot went with its wake-up


def test_a_sleep_of_no_time_or_less_still_waits_for_the_next_turn_of_the_loop() -> None:
    async def main() -> bool:
        pacer = Pacer(asyncio.get_running_loop())
        sleep = pacer.sleep(-1.0)
        assert not sleep.done()
        await sleep
        return sleep.done()

    assert asyncio.run(main())


def test_each_loop_has_its_one_pacer() -> None:
    async def main() -> tuple[Pacer, Pacer]:
        loop = asyncio.get_running_loop()
        return pacer_of(loop), pacer_of(loop)

    a, b = asyncio.run(main())
    c, _ = asyncio.run(main())
    assert a is b
    assert c is not a


@pytest.mark.parametrize("delay", [0.0, SLOT_S / 2, SLOT_S * 7.5])
def test_a_sleep_never_ends_before_its_time(delay: float) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await Pacer(loop).sleep(delay)
        return loop.time() - began

    assert asyncio.run(main()) >= delay - 0.001
