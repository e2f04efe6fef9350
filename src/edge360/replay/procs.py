"""Running the shares: in this process, or forked over `--workers` processes, while the parent
samples the target's `/metrics` once a second and prints a progress line.

Each worker runs its share (replay/share.py), sends its progress each second and all it measured
at the end over a pipe; the parent merges. Times are `time.monotonic()` seconds, which are
system-wide on Linux, so forked workers share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from edge360.replay.model import Curve
from edge360.replay.report import Histogram
from edge360.replay.share import Share, run_share
from edge360.replay.stats import Stats
from edge360.replay.target import sample_server

#: (achieved, watching, requests, errors, p99 latency) now
Snapshot = tuple[int, int, int, int, float | None]


@dataclass
class Live:
    """The parent's view: the progress line and the server's samples."""

    curve: Curve
    scale: float                  # the simulated fraction of the model (scale / shards)
    speed: float
    window_start_s: float
    epoch: float
    deadline: float               # the viewers are stopped then: later samples would not count
    metrics_url: str | None       # None: the target has no /metrics
    #: (real s, server, the players' requests and errors so far: when any errors came)
    samples: list[tuple[float, float | None, int, int]] = field(default_factory=list)
    last_requests: int = 0
    last_time: float = 0.0

    def sim_s(self, now: float) -> float:
        return self.window_start_s + (now - self.epoch) * self.speed

    def progress(self, now: float, snap: Snapshot, server: float | None) -> None:
        achieved, watching, requests, errors, p99 = snap
        rate = (requests - self.last_requests) / max(now - (self.last_time or self.epoch), 1e-9)
        self.last_requests, self.last_time = requests, now
        sim = self.sim_s(now)
        target = self.scale * self.curve.concurrency_at(sim)
        p99s = "-" if p99 is None else f"{p99 * 1000:.0f}ms"
        srv = "-" if server is None else f"{server:.0f}"
        print(f"\rreplay {int(sim // 3600):02d}:{int(sim % 3600 // 60):02d} target {target:,.0f} "
              f"achieved {achieved:,} watching {watching:,} server {srv} req/s {rate:,.0f} "
              f"errors {errors} p99 {p99s}   ", end="", file=sys.stderr, flush=True)


async def _sampler(live: Live, stop: asyncio.Event, done: asyncio.Event,
                   snapshot: Callable[[float], Snapshot]) -> None:
    """Once a second: read the server's sessions, record it, print the progress line."""
    async with aiohttp.ClientSession() as http:
        while not (stop.is_set() or done.is_set()):
            server = (await sample_server(http, live.metrics_url)
                      if live.metrics_url is not None else None)
            now = time.monotonic()
            if now > live.deadline:
                break                 # the viewers are being stopped: not an audience any more
            if now >= live.epoch:     # (the window opens a moment after the workers start)
                snap = snapshot(now)
                live.samples.append((now - live.epoch, server, snap[2], snap[3]))
                live.progress(now, snap, server)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(done.wait()), timeout=1.0)


def _child(conn: Connection, share: Share, parents: list[Connection]) -> None:
    """A forked worker: run its share, send progress each second and everything at the end.

    The parent's read ends it inherited are closed first: while this process held its own
    pipe's read end, a send to a parent that died would wait forever for a reader."""
    for end in parents:
        end.close()
    async def main() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def tick(st: Stats) -> None:
            try:
                conn.send(("progress", st.progress(time.monotonic())))
            except OSError:  # the parent is gone: nobody to play for
                stop.set()
        return await run_share(share, stop, tick)
    stats = asyncio.run(main())
    with contextlib.suppress(OSError):
        conn.send(("result", stats.to_wire()))
    conn.close()


def run_here(share: Share, live: Live) -> Stats:
    """One share in this process, sampled by the same loop."""
    async def single() -> Stats:
        stop, done = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        holder: list[Stats] = []

        def snap(now: float) -> Snapshot:
            if not holder:
                return 0, 0, 0, 0, None
            st = holder[0]
            return (st.achieved_now(now), st.watching_now, st.requests,
                    sum(st.errors.values()), st.latency.percentile(0.99))

        def keep(st: Stats) -> None:
            holder[:] = [st]
        sampler = asyncio.create_task(_sampler(live, stop, done, snap))
        try:
            return await run_share(share, stop, keep)
        finally:
            done.set()
            await sampler
            loop.remove_signal_handler(signal.SIGINT)
    return asyncio.run(single())


def run_forked(shares: list[Share], live: Live, total: Stats) -> Stats:
    """Each share in a forked worker; the parent samples, relays Ctrl-C, and merges."""
    ctx = multiprocessing.get_context("fork")
    children: list[tuple[Any, Connection]] = []
    for share in shares:
        parent_end, child_end = ctx.Pipe(duplex=False)
        parents = [c for _, c in children] + [parent_end]
        proc = ctx.Process(target=_child, args=(child_end, share, parents), daemon=True)
        proc.start()
        child_end.close()
        children.append((proc, parent_end))

    async def coordinate() -> None:
        stop, done = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        progress: dict[int, dict[str, Any]] = {}

        def on_stop() -> None:
            stop.set()
            for proc, _ in children:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, on_stop)

        def snap(_: float) -> Snapshot:
            hist = Histogram()
            for w in progress.values():
                hist.merge(Histogram(list(w["latency"])))
            return (sum(w["achieved"] for w in progress.values()),
                    sum(w["watching"] for w in progress.values()),
                    sum(w["requests"] for w in progress.values()),
                    sum(w["errors"] for w in progress.values()), hist.percentile(0.99))
        sampler = asyncio.create_task(_sampler(live, stop, done, snap))
        await gather([conn for _, conn in children], progress.__setitem__, total.merge)
        done.set()
        await sampler
        loop.remove_signal_handler(signal.SIGINT)
    asyncio.run(coordinate())
    for proc, conn in children:
        proc.join(timeout=10)
        conn.close()
    return total


async def gather(conns: list[Connection], on_progress: Callable[[int, Any], None],
                 on_result: Callable[[Any], None]) -> None:
    """Read every worker's pipe until its result (or its end), calling back on this loop.

    Each pipe is read with blocking reads in a thread of its own: a worker's result is
    megabytes, far more than a pipe holds, so one message takes many reads, and a pipe an event
    loop watches is non-blocking (uvloop makes it so), where such a read fails half-way with
    EAGAIN and the rest of the stream is lost. A worker that died sends nothing more: its pipe
    ends (EOFError) and it counts as finished with nothing to merge."""
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    left = [len(conns)]

    def deliver(k: int, kind: str, wire: Any) -> None:
        if kind == "progress":
            on_progress(k, wire)
            return
        if wire is not None:
            on_result(wire)
        left[0] -= 1
        if left[0] == 0:
            finished.set()

    def pump(k: int, conn: Connection) -> None:
        os.set_blocking(conn.fileno(), True)  # whatever watched it before
        while True:
            try:
                kind, wire = conn.recv()
            except Exception:  # an ended or unreadable stream ends that worker
                kind, wire = "result", None
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(deliver, k, kind, wire)
            if kind != "progress":
                return
    threads = [threading.Thread(target=pump, args=(k, conn), daemon=True,
                                name=f"replay-worker-{k}") for k, conn in enumerate(conns)]
    for t in threads:
        t.start()
    if conns:
        await finished.wait()
    for t in threads:
        t.join(timeout=5)
