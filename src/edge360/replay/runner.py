"""A live replay: check the machine and the target, schedule the viewers, sample the server, report.

Each virtual viewer holds its own keep-alive connection (or, with `connections`, shares a bounded
pool), so the plan is checked first against the machine (replay/limits.py: descriptors per
process, ports per source address) and the speed against the target's segments; `--workers N`
forks N processes, each taking every N-th viewer of this shard (replay/procs.py). The ground truth
follows the target's counting rule (replay/truth.py), read from its `/api/stats`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge360.core.errors import UsageError
from edge360.replay import limits, truth
from edge360.replay.model import Curve, Viewer, WatchTime, sample_viewers
from edge360.replay.player import PlayerConfig, expected_bitrate
from edge360.replay.procs import Live, run_forked, run_here
from edge360.replay.profiles import PROFILES
from edge360.replay.report import SeriesPoint, write_report
from edge360.replay.series import RenditionMix, measured_mix
from edge360.replay.share import Share, run_share
from edge360.replay.stats import Stats
from edge360.replay.target import TargetInfo, probe

__all__ = ["Plan", "Share", "model_summary", "run_live", "run_share"]

REAL_IDLE_TIMEOUT = 30.0     # the production default the compressed timeout is derived from
DEFAULT_PHASE_S = 6.0        # a 6 s segment: a watching player's next fetch falls within one
MIX_BUCKETS = 120            # rendition-mix buckets over the window (each at least 1 real second)
#: the shortest real time a segment may last: below it the players' timers (one event loop per
#: process, woken a few milliseconds late under load) cannot keep one fetch per segment
MIN_SEGMENT_REAL_S = 0.02
#: segment bytes a second one replayer process receives from a server on loopback here, the
#: kernel's copy into the process being most of its cost: measured against nginx serving the
#: demo at speed 60 on this shared 2-core machine, ~345 MB/s stalled 0.07 % of the time and
#: ~480 MB/s 3.6 % while other jobs kept the load average at 5-6 (the report then says pacing
#: was lost); a plan above this is refused
RECEIVE_BUDGET = 500e6
#: pacing is lost when the players wake this share of a segment's real duration late (p99)...
LATE_SHARE = 0.5
#: nor may any player wake more than this many segment durations (and a second) late: a burst
#: of lateness (the replayer's core saturated for a while) hides in a p99 over a whole run
LATE_WORST_SEGMENTS = 1.0
#: ...or when they stall this much of the time
MAX_STALL = 0.01


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
    connections: int | None = None       # None: one connection per viewer
    profile: str = "hlsjs"
    cmcd: str | None = None
    sources: tuple[str, ...] = ()
    ramp_s: float | None = None          # real seconds the viewers already watching join over

    @property
    def phase_s(self) -> float:
        """Simulated seconds over which the viewers already watching make their first request:
        one segment's fetch phase, or --ramp (real seconds) x speed."""
        return DEFAULT_PHASE_S if self.ramp_s is None else self.ramp_s * self.speed


def _select(viewers: list[Viewer], shard: tuple[int, int], workers: int) -> list[list[Viewer]]:
    """This shard's viewers split over the workers: viewer index % (n·W) == i + n·w."""
    i, n = shard
    return [[v for v in viewers if v.index % (n * workers) == i + n * w] for w in range(workers)]


def check_machine(plan: Plan, info: TargetInfo, shares: list[list[Viewer]]) -> dict[str, Any]:
    """Raise the descriptor limit the plan needs, or refuse it (one UsageError line): too many
    segment bytes a second, descriptors, ports, or a source address it cannot send from."""
    per_worker = max((limits.peak_concurrent(s) for s in shares), default=0)
    total = limits.peak_concurrent(v for s in shares for v in s)
    nofile = limits.check_descriptors(per_worker, plan.connections, plan.workers, total)
    host = urlsplit(plan.target).hostname
    ports = limits.check_ports(total, plan.connections, plan.workers, len(plan.sources),
                               limits.is_loopback(host))
    limits.check_bindable(plan.sources)
    rate = check_throughput(plan, info, total)
    return {"peak_connections_planned": limits.connections_needed(total, None if
                                                                  plan.connections is None
                                                                  else plan.connections
                                                                  * plan.workers),
            "nofile": nofile.soft, "nofile_hard": nofile.hard, "ports_per_address": ports,
            "expected_segment_bytes_per_s": round(rate)}


def check_speed(plan: Plan, info: TargetInfo) -> None:
    if info.segment_s is not None and info.segment_s / plan.speed < MIN_SEGMENT_REAL_S:
        raise UsageError(
            f"--speed {plan.speed:g}: a {info.segment_s:g} s segment would last "
            f"{info.segment_s / plan.speed * 1000:.1f} ms of real time, under the "
            f"{MIN_SEGMENT_REAL_S * 1000:g} ms the players can pace; use --speed "
            f"{info.segment_s / MIN_SEGMENT_REAL_S:g} or less")


def check_throughput(plan: Plan, info: TargetInfo, peak: int) -> float:
    """Refuse a plan whose players would fetch more segment bytes a second than the replayer
    receives; returns the expected bytes a second at the peak."""
    ratio = 1.0 if info.size_ratio is None else info.size_ratio
    rate = peak * expected_bitrate(list(info.bandwidths)) * ratio * plan.speed / 8
    budget = RECEIVE_BUDGET * min(plan.workers, os.cpu_count() or 1)
    if rate > budget:
        fits = plan.speed * budget / rate
        raise UsageError(
            f"--speed {plan.speed:g}: the {peak:,} viewers of the peak would fetch "
            f"~{rate / 1e6:,.0f} MB/s of segments (their renditions' bytes x speed), more "
            f"than the replayer receives (~{budget / 1e6:,.0f} MB/s with {plan.workers} "
            f"worker(s) here); use --speed {fits:.3g} or less, or a smaller --scale")
    return rate


def _advise(plan: Plan, info: TargetInfo) -> None:
    """What the server must be told for its counts to compare with the truth."""
    if plan.speed != 1:
        idle = REAL_IDLE_TIMEOUT / plan.speed
        print(f"replay: at speed {plan.speed:g} a real {REAL_IDLE_TIMEOUT:g} s idle timeout is "
              f"{idle:.3g} s: run the server with sessions.idle_timeout = {idle:.3g} and "
              f"sessions.time_scale = {plan.speed:g} for comparable counts (it reports "
              f"{info.idle_timeout:g} and {info.time_scale or 'no time_scale'})", file=sys.stderr)
    if info.time_scale is None:
        print("replay: the target reports no time_scale, so it counts a viewer by its requests "
              "(first media segment to last request + idle timeout); the truth does too",
              file=sys.stderr)
    elif abs(info.time_scale - plan.speed) > 1e-9:
        print(f"replay: the target plays media time out at {info.time_scale:g} x while the "
              f"players play at {plan.speed:g} x, so it counts each viewer's buffer "
              f"{plan.speed / info.time_scale:.3g} times as long; the truth follows its rule",
              file=sys.stderr)


def run_live(plan: Plan, curve: Curve, report_dir: Path) -> dict[str, Any]:
    """Replay the plan against its target and write the report; Ctrl-C stops and still reports."""
    info = asyncio.run(probe(plan.target))  # first: a target it cannot replay is refused at once
    check_speed(plan, info)
    viewers = sample_viewers(curve, WatchTime(), seed=plan.seed, scale=plan.scale,
                             window_h=plan.window_h, phase_s=plan.phase_s)
    chosen = _select(viewers, plan.shard, plan.workers)
    machine = check_machine(plan, info, chosen)
    _advise(plan, info)
    rule = truth.Rule(info.idle_timeout, info.time_scale)
    window_real = (plan.window_h[1] - plan.window_h[0]) * 3600 / plan.speed
    epoch = time.monotonic() + 0.5      # a moment for the workers to start
    config = PlayerConfig(master_url=plan.target, speed=plan.speed, loop=plan.loop, seed=plan.seed,
                          mix_bucket_s=max(window_real / MIX_BUCKETS, 1.0),
                          profile=PROFILES[plan.profile], cmcd=plan.cmcd, epoch=epoch)
    deadline = epoch + window_real
    if plan.duration_s is not None:
        deadline = min(deadline, epoch + plan.duration_s)
    shares = [Share(vs, config, epoch, rule, plan.connections, deadline, plan.sources)
              for vs in chosen]
    frac = plan.scale / plan.shard[1]
    live = Live(curve, frac, plan.speed, plan.window_h[0] * 3600, epoch, deadline,
                info.metrics_url if info.has_metrics else None)
    stats = (run_here(shares[0], live) if plan.workers == 1
             else run_forked(shares, live, Stats(rule=rule)))
    print(file=sys.stderr)
    summary = model_summary(plan, curve)
    summary.update(machine)
    summary.update(_summarise(plan, info, live, stats, rule, viewers=viewers, chosen=chosen))
    if summary["pacing_lost"]:
        print(f"replay: pacing lost: {summary['pacing_note']}", file=sys.stderr)
    write_report(report_dir, summary, _series(plan, curve, live, stats, rule),
                 mix=_mix(plan, stats, epoch, config.mix_bucket_s),
                 day=[(t / 3600, frac * c)
                      for t, c in zip(curve.times_s, curve.concurrency, strict=True)])
    return summary


def model_summary(plan: Plan, curve: Curve) -> dict[str, Any]:
    """Figures every report carries about the model and the run's parameters (target_peak is the
    scaled, in-window, this-shard figure)."""
    w0, w1 = plan.window_h
    in_window = [c for t, c in zip(curve.times_s, curve.concurrency, strict=True)
                 if w0 * 3600 <= t <= w1 * 3600]
    in_window += [curve.concurrency_at(w0 * 3600), curve.concurrency_at(w1 * 3600)]
    profile = PROFILES[plan.profile]
    return {
        "scale": plan.scale, "speed": plan.speed, "window": [w0, w1], "seed": plan.seed,
        "shard": f"{plan.shard[0]}/{plan.shard[1]}", "workers": plan.workers, "loop": plan.loop,
        "player_profile": profile.name,
        "player_buffer": {"goal_s": profile.goal_s, "max_s": profile.max_s,
                          "max_bytes": profile.max_bytes, "start_s": profile.start_s,
                          "rebuffer_s": profile.rebuffer_s, "source": profile.source},
        "cmcd": plan.cmcd or "off",
        "connections": "per-viewer" if plan.connections is None else plan.connections,
        "source_addresses": list(plan.sources), "ramp_s": plan.ramp_s,
        "model_views": curve.views, "model_peak": round(curve.peak, 1),
        "peak_hour": round(curve.peak_hour, 3), "prime_amplitude": round(curve.amplitude, 5),
        "mean_watch_s": round(curve.mean_watch_s, 1),
        "littles_law": {k: round(v, 4) for k, v in curve.littles_law().items()},
        "target_peak": round(plan.scale / plan.shard[1] * max(in_window), 1),
    }


def _series(plan: Plan, curve: Curve, live: Live, stats: Stats, rule: truth.Rule
            ) -> list[SeriesPoint]:
    times = [live.epoch + rel for rel, *_ in live.samples]
    achieved = truth.counts(truth.counted(stats.records, rule), times)
    watching = truth.counts(truth.watching(stats.records), times)
    frac = plan.scale / plan.shard[1]
    out = []
    for (rel, server, requests, errors), a, w in zip(live.samples, achieved, watching,
                                                     strict=True):
        sim = plan.window_h[0] * 3600 + rel * plan.speed
        out.append(SeriesPoint(time_h=sim / 3600, target=frac * curve.concurrency_at(sim),
                               achieved=float(a), server=server,
                               arrivals=frac * curve.rate_at(sim), watching=float(w),
                               requests=requests, errors=errors))
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


def pacing(speed: float, segment_s: float | None, stats: Stats, stall: float | None
           ) -> dict[str, Any]:
    """Whether the players kept their schedule (segments of `segment_s` media seconds at
    `speed`): how late they woke, and their stalls."""
    p50, p99 = stats.lateness.percentile(0.5), stats.lateness.percentile(0.99)
    why = []
    segment_real = None if segment_s is None else segment_s / speed
    if p99 is not None and segment_real is not None and p99 > LATE_SHARE * segment_real:
        why.append(f"players woke {p99 * 1000:.0f} ms late (p99) for fetches due every "
                   f"{segment_real * 1000:.0f} ms")
    worst = stats.late_max
    if segment_real is not None and worst > max(LATE_WORST_SEGMENTS * segment_real, 1.0):
        why.append(f"players woke up to {worst:.1f} s late (worst) for fetches due every "
                   f"{segment_real * 1000:.0f} ms: the replayer fell behind for a while")
    if stall is not None and stall >= MAX_STALL:
        why.append(f"stall ratio {stall:.2%} (at most {MAX_STALL:.0%})")
    return {"pacing_late_p50_s": None if p50 is None else round(p50, 4),
            "pacing_late_p99_s": None if p99 is None else round(p99, 4),
            "pacing_late_max_s": round(worst, 4),
            "segment_real_s": None if segment_real is None else round(segment_real, 4),
            "pacing_lost": bool(why), "pacing_note": "; ".join(why) or "kept"}


def _summarise(plan: Plan, info: TargetInfo, live: Live, stats: Stats, rule: truth.Rule, *,
               viewers: list[Viewer], chosen: list[list[Viewer]]) -> dict[str, Any]:
    counted = truth.counted(stats.records, rule)
    watching = truth.watching(stats.records)
    times = [live.epoch + rel for rel, *_ in live.samples]
    servers = [s for _, s, *_ in live.samples if s is not None]
    mine = [v for share in chosen for v in share]
    startup50, startup95 = stats.startup.percentile(0.5), stats.startup.percentile(0.95)
    p99 = stats.latency.percentile(0.99)
    stall = round(stats.stall_s / stats.played_s, 6) if stats.played_s else None
    return {
        "views": sum(1 for v in mine if v.offset_s == 0.0),
        "viewers_at_start": sum(1 for v in mine if v.offset_s > 0.0),
        "viewers_started": len(stats.records),
        # those that sent a media request: the views a server counts (one that quit before its
        # first segment never was one)
        "viewers_with_media": truth.with_media(stats.records),
        # the views the target's rule counts: a viewer silent for longer than the rule covers
        # is counted again when it returns (truth.Record.earlier)
        "counted_views": len(counted),
        # exact peaks of the intervals, not only at the sampled instants
        "achieved_peak": max(truth.peak(counted), *truth.counts(counted, times), 0),
        "watching_peak": truth.peak(watching),
        "counting_rule": rule.name, "time_scale": info.time_scale,
        "server_peak": max(servers) if info.has_metrics and servers else None,
        "requests": stats.requests, "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(sorted(stats.errors.items())),
        "errors_by_detail": dict(sorted(stats.error_details.items())), "bytes": stats.bytes,
        "gave_up": stats.gave_up,
        "startup_p50_s": None if startup50 is None else round(startup50, 4),
        "startup_p95_s": None if startup95 is None else round(startup95, 4),
        "stall_ratio": stall, **pacing(plan.speed, info.segment_s, stats, stall),
        "playlist_reloads": stats.reloads, "live_skips": stats.live_skips,
        "latency_p99_s": None if p99 is None else round(p99, 4),
        **stats.summary(),  # admission queue waits, steering moves (docs/OVERLOAD.md)
        "idle_timeout": info.idle_timeout, "target": plan.target,
        "real_seconds": round(live.samples[-1][0], 2) if live.samples else 0.0,
        "total_viewers_sampled": len(viewers),
    }
