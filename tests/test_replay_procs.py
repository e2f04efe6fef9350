"""The replayer's parent reads its forked workers' pipes (replay/procs.py `gather`): a result of
megabytes, many times what a pipe holds, arrives whole under uvloop as the replayer runs it, and
a worker that dies without a word counts as finished with nothing to merge."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from edge360.replay.procs import gather

BIG = {"records": [(i, float(i), f"viewer-{i:06d}", i * 3) for i in range(120_000)]}


def _talker(conn: Connection, progress: int, result: Any) -> None:
    for i in range(progress):
        conn.send(("progress", {"n": i}))
    conn.send(("result", result))
    conn.close()


def _mute(conn: Connection) -> None:
    conn.close()
    os._exit(3)  # dies without sending anything, as a killed worker does


def _run(targets: list[tuple[Any, tuple[Any, ...]]], *, nonblocking: bool = False
         ) -> tuple[dict[int, list[Any]], list[Any]]:
    ctx = multiprocessing.get_context("fork")
    procs, conns = [], []
    for target, args in targets:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=target, args=(child_end, *args), daemon=True)
        proc.start()
        child_end.close()
        if nonblocking:  # as an event loop that watched it leaves it (libuv's poll does)
            os.set_blocking(parent_end.fileno(), False)
        procs.append(proc)
        conns.append(parent_end)
    seen: dict[int, list[Any]] = {}
    results: list[Any] = []

    async def main() -> None:
        await gather(conns, lambda k, w: seen.setdefault(k, []).append(w), results.append)
    uvloop.run(main())
    for proc in procs:
        proc.join(timeout=10)
    for conn in conns:
        conn.close()
    return seen, results


def test_a_result_bigger_than_a_pipe_arrives_whole_from_every_worker() -> None:
    seen, results = _run([(_talker, (5, BIG)), (_talker, (2, BIG))])
    assert seen == {0: [{"n": i} for i in range(5)], 1: [{"n": 0}, {"n": 1}]}
    assert len(results) == 2 and all(r == BIG for r in results)


def test_a_worker_that_dies_silently_is_finished_with_nothing_to_merge() -> None:
    seen, results = _run([(_mute, ()), (_talker, (1, {"records": [1]}))])
    assert results == [{"records": [1]}]
    assert seen == {1: [{"n": 0}]}


def test_a_pipe_left_non_blocking_is_still_read_whole() -> None:
    # a blocking read of a non-blocking pipe fails half-way through a big message (EAGAIN)
    # whenever the writer falls behind: the reader makes it blocking again
    seen, results = _run([(_talker, (1, BIG)), (_talker, (0, BIG))], nonblocking=True)
    assert len(results) == 2 and all(r == BIG for r in results)
    assert seen == {0: [{"n": 0}]}
