"""A live replay: probe the target, schedule the viewers, sample the server, report.

One process runs thousands of virtual players as tasks (replay/share.py) over ONE bounded
keep-alive connection pool per origin (a process has 20,000 descriptors, an address pair ~28,000
ports: viewers share connections and are told apart by `sid`). `--workers N` forks N such
processes, each taking every N-th viewer of this shard; the parent samples the server's `/metrics`
once a second, prints progress and merges.
Times are `time.monotonic()` seconds, which are system-wide on Linux, so forked workers share them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from edge360.replay.model import Curve, Viewer, WatchTime, sample_viewers
from edge360.replay.player import PlayerConfig, Stats
from edge360.replay.report import Histogram, SeriesPoint, write_report
from edge360.replay.series import RenditionMix, measured_mix
from edge360.replay.share import Share, run_share
from edge360.replay.target import TargetInfo, probe, sample_server

REAL_IDLE_TIMEOUT = 30.0     # the production default the compressed timeout is derived from
MIX_BUCKETS = 120            # rendition-mix buckets over the window (each at least 1 real second)


@dataclass(frozen=True)
class Plan:
    """Validated `edge360 replay` flags."""

    target: str
    views: float
    peak: float
    scale: float
    speed: float
    window_h: tuple[float, float]
    seed: int
    loop: bool
    duration_s: float | None
    workers: int
    shard: tuple[int, int]
    connections: int = 512


def _stats_to_wire(stats: Stats) -> dict[str, Any]:
    return {"requests": stats.requests, "bytes": stats.bytes, "errors": dict(stats.errors),
            "latency": stats.latency.counts, "startup": stats.startup.counts,
            "stall_s": stats.stall_s, "played_s": stats.played_s, "running": stats.running,
            "reloads": stats.reloads, "live_skips": stats.live_skips,
            "counting_until": list(stats.counting_until)}


def _child(conn: Connection, share: Share) -> None:
    """A forked worker: run its share, send progress each second and its truth at the end."""
    async def main() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def tick(st: Stats) -> None:
            st.achieved_now(time.monotonic())
            conn.send(("progress", _stats_to_wire(st)))
        return await run_share(share, stop, tick)
    stats = asyncio.run(main())
    wire = _stats_to_wire(stats)
    wire["truth"] = stats.truth
    wire["mix"], wire["mix_bandwidth"] = stats.mix, stats.mix_bandwidth
    conn.send(("result", wire))
    conn.close()


def _merge(into: Stats, wire: dict[str, Any]) -> None:
    into.requests += wire["requests"]
    into.bytes += wire["bytes"]
    for k, n in wire["errors"].items():
        into.errors[k] = into.errors.get(k, 0) + n
    into.latency.merge(Histogram(list(wire["latency"])))
    into.startup.merge(Histogram(list(wire["startup"])))
    into.stall_s += wire["stall_s"]
    into.played_s += wire["played_s"]
    into.reloads += wire["reloads"]
    into.live_skips += wire["live_skips"]
    into.truth.extend(tuple(x) for x in wire.get("truth", []))
    for key, seconds in wire.get("mix", {}).items():
        into.mix[key] = into.mix.get(key, 0.0) + seconds
    into.mix_bandwidth.update(wire.get("mix_bandwidth", {}))


class _Live:
    """The parent's view: progress line, server samples, and (with workers) the children's stats."""

    def __init__(self, plan: Plan, curve: Curve, info: TargetInfo, epoch: float,
                 fraction: float) -> None:
        self.plan, self.curve, self.info, self.epoch = plan, curve, info, epoch
        self.fraction = fraction
        self.samples: list[tuple[float, float | None]] = []   # (real s since epoch, server)
        self.last_requests = 0
        self.last_time = epoch

    def sim_s(self, now: float) -> float:
        return self.plan.window_h[0] * 3600 + (now - self.epoch) * self.plan.speed

    def progress(self, now: float, *, achieved: int, requests: int, errors: int, p99: float | None,
                 server: float | None) -> None:
        rate = (requests - self.last_requests) / max(now - self.last_time, 1e-9)
        self.last_requests, self.last_time = requests, now
        sim = self.sim_s(now)
        target = self.plan.scale * self.fraction * self.curve.concurrency_at(sim)
        p99s = "-" if p99 is None else f"{p99 * 1000:.0f}ms"
        srv = "-" if server is None else f"{server:.0f}"
        print(f"\rreplay {int(sim // 3600):02d}:{int(sim % 3600 // 60):02d} target {target:,.0f} "
              f"achieved {achieved:,} server {srv} req/s {rate:,.0f} errors {errors} p99 {p99s}   ",
              end="", file=sys.stderr, flush=True)


async def _sampler(live: _Live, stop: asyncio.Event, done: asyncio.Event,
                   snapshot: Callable[[float], tuple[int, int, int, float | None]]) -> None:
    """Once a second: read the server's sessions, record it, print the progress line."""
    async with aiohttp.ClientSession() as http:
        while not (stop.is_set() or done.is_set()):
            server = (await sample_server(http, live.info.metrics_url)
                      if live.info.has_metrics else None)
            now = time.monotonic()
            live.samples.append((now - live.epoch, server))
            achieved, requests, errors, p99 = snapshot(now)
            live.progress(now, achieved=achieved, requests=requests, errors=errors, p99=p99,
                          server=server)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(done.wait()), timeout=1.0)


def _select(viewers: list[Viewer], shard: tuple[int, int], workers: int) -> list[list[Viewer]]:
    """This shard's viewers split over the workers: viewer index % (n·W) == i + n·w."""
    i, n = shard
    return [[v for v in viewers if v.index % (n * workers) == i + n * w] for w in range(workers)]


def run_live(plan: Plan, curve: Curve, report_dir: Path) -> dict[str, Any]:
    """Replay the plan against its target and write the report; Ctrl-C stops and still reports."""
    info = asyncio.run(probe(plan.target))
    if plan.speed > 1:
        print(f"replay: at speed {plan.speed:g} a real {REAL_IDLE_TIMEOUT:g} s idle timeout is "
              f"{REAL_IDLE_TIMEOUT / plan.speed:.3g} s: run the server with "
              f"sessions.idle_timeout = {REAL_IDLE_TIMEOUT / plan.speed:.3g} for comparable counts "
              f"(it reports {info.idle_timeout:g})", file=sys.stderr)
    viewers = sample_viewers(curve, WatchTime(), seed=plan.seed, scale=plan.scale,
                             window_h=plan.window_h)
    shares = _select(viewers, plan.shard, plan.workers)
    window_real = (plan.window_h[1] - plan.window_h[0]) * 3600 / plan.speed
    config = PlayerConfig(master_url=plan.target, speed=plan.speed, loop=plan.loop, seed=plan.seed,
                          mix_bucket_s=max(window_real / MIX_BUCKETS, 1.0))
    epoch = time.monotonic() + 0.5      # a moment for the workers to start
    deadline = None if plan.duration_s is None else epoch + plan.duration_s
    deadline = epoch + window_real if deadline is None else min(deadline, epoch + window_real)
    live = _Live(plan, curve, info, epoch, 1.0 / plan.shard[1])
    stats = _run_workers(plan, info, shares, config=config, epoch=epoch,
                         deadline=deadline, live=live)
    print(file=sys.stderr)
    summary = _summarise(plan, curve, info, live, stats, viewers=viewers, shares=shares)
    full = model_summary(plan, curve)
    full.update(summary)
    write_report(report_dir, full, _series(plan, curve, info, live, stats),
                 mix=_mix(plan, stats, epoch, config.mix_bucket_s),
                 day=[(t / 3600, plan.scale / plan.shard[1] * c)
                      for t, c in zip(curve.times_s, curve.concurrency, strict=True)])
    return full


def _run_workers(plan: Plan, info: TargetInfo, shares: list[list[Viewer]], *,
                 config: PlayerConfig, epoch: float, deadline: float, live: _Live) -> Stats:
    total = Stats(idle_timeout=info.idle_timeout)
    if plan.workers == 1:
        async def single() -> Stats:
            stop, done = asyncio.Event(), asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, stop.set)
            holder: list[Stats] = []

            def snap(now: float) -> tuple[int, int, int, float | None]:
                if not holder:
                    return 0, 0, 0, None
                st = holder[0]
                return (st.achieved_now(now), st.requests, sum(st.errors.values()),
                        st.latency.percentile(0.99))
            def keep(st: Stats) -> None:
                holder[:] = [st]
            share = Share(shares[0], config, epoch, info.idle_timeout, plan.connections, deadline)
            sampler = asyncio.create_task(_sampler(live, stop, done, snap))
            try:
                return await run_share(share, stop, keep)
            finally:
                done.set()
                await sampler
                loop.remove_signal_handler(signal.SIGINT)
        return asyncio.run(single())
    ctx = multiprocessing.get_context("fork")
    children: list[tuple[Any, Connection]] = []
    for viewers in shares:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(child_end, Share(
            viewers, config, epoch, info.idle_timeout, plan.connections, deadline)), daemon=True)
        proc.start()
        child_end.close()
        children.append((proc, parent_end))

    async def coordinate() -> None:
        stop, done = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        progress: dict[int, dict[str, Any]] = {}
        finished: set[int] = set()

        def on_stop() -> None:
            stop.set()
            for proc, _ in children:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, on_stop)

        def reader(k: int, conn: Connection) -> None:
            try:
                kind, wire = conn.recv()
            except EOFError:
                kind, wire = "result", None
            if kind == "progress":
                progress[k] = wire
                return
            loop.remove_reader(conn.fileno())
            if wire is not None:
                _merge(total, wire)
            finished.add(k)
            if len(finished) == len(children):
                done.set()
        for k, (_, conn) in enumerate(children):
            loop.add_reader(conn.fileno(), reader, k, conn)

        def snap(now: float) -> tuple[int, int, int, float | None]:
            hist = Histogram()
            achieved = requests = errors = 0
            for w in progress.values():
                achieved += w["running"] + sum(1 for t in w["counting_until"] if t > now)
                requests += w["requests"]
                errors += sum(w["errors"].values())
                hist.merge(Histogram(list(w["latency"])))
            return achieved, requests, errors, hist.percentile(0.99)
        sampler = asyncio.create_task(_sampler(live, stop, done, snap))
        await done.wait()
        await sampler
        loop.remove_signal_handler(signal.SIGINT)
    asyncio.run(coordinate())
    for proc, conn in children:
        proc.join(timeout=10)
        conn.close()
    return total


def model_summary(plan: Plan, curve: Curve) -> dict[str, Any]:
    """Figures every report carries about the model and the run's parameters (target_peak is the
    scaled, in-window, this-shard figure)."""
    w0, w1 = plan.window_h
    in_window = [c for t, c in zip(curve.times_s, curve.concurrency, strict=True)
                 if w0 * 3600 <= t <= w1 * 3600]
    in_window += [curve.concurrency_at(w0 * 3600), curve.concurrency_at(w1 * 3600)]
    return {
        "scale": plan.scale, "speed": plan.speed, "window": [w0, w1], "seed": plan.seed,
        "shard": f"{plan.shard[0]}/{plan.shard[1]}", "workers": plan.workers, "loop": plan.loop,
        "model_views": curve.views, "model_peak": round(curve.peak, 1),
        "peak_hour": round(curve.peak_hour, 3), "prime_amplitude": round(curve.amplitude, 5),
        "mean_watch_s": round(curve.mean_watch_s, 1),
        "littles_law": {k: round(v, 4) for k, v in curve.littles_law().items()},
        "target_peak": round(plan.scale / plan.shard[1] * max(in_window), 1),
    }


def _achieved(truth: list[tuple[float, float]], idle: float, times: list[float]) -> list[int]:
    starts = sorted(a for a, _ in truth)
    ends = sorted(b + idle for _, b in truth)
    return [bisect.bisect_right(starts, t) - bisect.bisect_left(ends, t) for t in times]


def _series(plan: Plan, curve: Curve, info: TargetInfo, live: _Live, stats: Stats
            ) -> list[SeriesPoint]:
    times = [live.epoch + rel for rel, _ in live.samples]
    achieved = _achieved(stats.truth, info.idle_timeout, times)
    frac = plan.scale / plan.shard[1]
    out = []
    for (rel, server), a in zip(live.samples, achieved, strict=True):
        sim = plan.window_h[0] * 3600 + rel * plan.speed
        idx = min(int(sim / curve.step_s), len(curve.arrival_rate) - 1)
        out.append(SeriesPoint(time_h=sim / 3600, target=frac * curve.concurrency_at(sim),
                               achieved=float(a), server=server,
                               arrivals=frac * curve.arrival_rate[idx]))
    return out


def _mix(plan: Plan, stats: Stats, epoch: float, bucket_s: float) -> RenditionMix | None:
    """The measured rendition mix, buckets placed at their middle in hours after release."""
    w0, w1 = plan.window_h
    seconds: dict[tuple[float, str], float] = {}
    for (bucket, name), s in stats.mix.items():
        hour = min(max(w0 + ((bucket + 0.5) * bucket_s - epoch) * plan.speed / 3600, w0), w1)
        seconds[(hour, name)] = seconds.get((hour, name), 0.0) + s
    return measured_mix(seconds, {k: float(v) for k, v in stats.mix_bandwidth.items()},
                        "share of segment time the virtual players fetched")


def _summarise(plan: Plan, curve: Curve, info: TargetInfo, live: _Live, stats: Stats, *,
               viewers: list[Viewer], shares: list[list[Viewer]]) -> dict[str, Any]:
    times = [live.epoch + rel for rel, _ in live.samples]
    achieved = _achieved(stats.truth, info.idle_timeout, times)
    if stats.truth:   # the exact peak of the truth intervals, not only at the sampled instants
        achieved.append(max(_achieved(stats.truth, info.idle_timeout,
                                      sorted(a for a, _ in stats.truth)), default=0))
    servers = [s for _, s in live.samples if s is not None]
    mine = [v for share in shares for v in share]
    startup50, startup95 = stats.startup.percentile(0.5), stats.startup.percentile(0.95)
    p99 = stats.latency.percentile(0.99)
    return {
        "views": sum(1 for v in mine if v.offset_s == 0.0),
        "viewers_at_start": sum(1 for v in mine if v.offset_s > 0.0),
        "viewers_started": len(stats.truth),
        "achieved_peak": max(achieved, default=0),
        "server_peak": max(servers) if info.has_metrics and servers else None,
        "requests": stats.requests, "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(sorted(stats.errors.items())), "bytes": stats.bytes,
        "startup_p50_s": None if startup50 is None else round(startup50, 4),
        "startup_p95_s": None if startup95 is None else round(startup95, 4),
        "stall_ratio": round(stats.stall_s / stats.played_s, 6) if stats.played_s else None,
        "playlist_reloads": stats.reloads, "live_skips": stats.live_skips,
        "latency_p99_s": None if p99 is None else round(p99, 4),
        "idle_timeout": info.idle_timeout, "target": plan.target,
        "real_seconds": round(live.samples[-1][0], 2) if live.samples else 0.0,
        "total_viewers_sampled": len(viewers),
    }
