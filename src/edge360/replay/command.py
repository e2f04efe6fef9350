"""The `edge360 replay` command line: flags, their validation, and the model-only (`--model`) run.

Bad input raises UsageError with one line; cli.py prints `replay: <msg>` and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge360.core.errors import UsageError
from edge360.replay import cmcd, limits
from edge360.replay.model import Curve, WatchTime, calibrate, sample_viewers, sampled_concurrency
from edge360.replay.player import HEADROOM, LINKS
from edge360.replay.profiles import PROFILES
from edge360.replay.report import SeriesPoint, write_report
from edge360.replay.runner import Plan, model_summary, run_live
from edge360.replay.series import expected_mix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="master playlist URL to replay against")
    parser.add_argument("--views", type=float, default=1_000_000, help="views in the first 24 h")
    parser.add_argument("--peak", type=float, default=60_000, help="peak simultaneous viewers")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of viewers simulated")
    parser.add_argument("--speed", type=float, default=1.0, help="time compression factor")
    parser.add_argument("--window", default="0-24",
                        help="hours of the day, START-END (e.g. 9-10.5)")
    parser.add_argument("--report", default="./report", help="directory for the report files")
    parser.add_argument("--model", action="store_true",
                        help="no network: compute and plot the model")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loop", action="store_true",
                        help="restart the title at EXT-X-ENDLIST while watch time remains")
    parser.add_argument("--duration", type=float, default=None, help="stop after S real seconds")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the viewers")
    parser.add_argument("--shard", default="0/1", help="i/n: this machine's share of the viewers")
    parser.add_argument("--connections", type=int, default=None,
                        help="share N keep-alive connections per process among its viewers "
                             "(default: each viewer holds its own, as real players do)")
    parser.add_argument("--source-addresses", default=None, metavar="N|ADDR,...",
                        help="spread the viewers' connections over source addresses: a count "
                             "(127.0.0.1 .. 127.0.0.N, loopback targets) or a list")
    parser.add_argument("--player-profile", default="hlsjs", choices=sorted(PROFILES),
                        help="how the virtual players buffer (default hlsjs)")
    parser.add_argument("--ramp", type=float, default=None, metavar="SECONDS",
                        help="the viewers already watching when the window opens make their "
                             "first request over this many real seconds (default: one 6 s "
                             "segment, compressed by --speed)")
    parser.add_argument("--cmcd", nargs="?", const="query", default=None, choices=cmcd.MODES,
                        help="send CMCD (CTA-5004) as the CMCD query parameter (default when "
                             "given) or as CMCD-* headers")


def parse_window(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split("-", 1))
    except ValueError:
        raise UsageError(
            f"--window must be START-END in hours, e.g. 9-10.5 (got {text!r})") from None
    if not (0.0 <= a < b <= 24.0):
        raise UsageError(f"--window {text}: need 0 <= START < END <= 24")
    return a, b


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/", 1))
    except ValueError:
        raise UsageError(f"--shard must be i/n, e.g. 0/4 (got {text!r})") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text}: need n >= 1 and 0 <= i < n")
    return i, n


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Validate every flag (one UsageError line for the first bad one)."""
    if not 0 < args.scale <= 1:
        raise UsageError(f"--scale must be in (0, 1] (got {args.scale:g})")
    if not args.speed > 0:
        raise UsageError(f"--speed must be > 0 (got {args.speed:g})")
    if args.views < 1 or args.peak < 1:
        raise UsageError("--views and --peak must be at least 1")
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be > 0 seconds (got {args.duration:g})")
    if args.ramp is not None and not args.ramp > 0:
        raise UsageError(f"--ramp must be > 0 seconds (got {args.ramp:g})")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1 (got {args.workers})")
    if args.connections is not None and args.connections < 1:
        raise UsageError(f"--connections must be >= 1 (got {args.connections})")
    window, shard = parse_window(args.window), parse_shard(args.shard)
    if not args.model and not args.target:
        raise UsageError("--target URL is required (or --model for the model alone)")
    sources = limits.parse_sources(args.source_addresses,
                                   urlsplit(args.target or "").hostname)
    if sources and args.connections is not None:
        raise UsageError("--source-addresses spreads the viewers' own connections: it does not "
                         "go with --connections (a shared pool)")
    return Plan(target=args.target or "", views=args.views, peak=args.peak, scale=args.scale,
                speed=args.speed, window_h=window, seed=args.seed, loop=args.loop,
                duration_s=args.duration, workers=args.workers, shard=shard,
                connections=args.connections, profile=args.player_profile, cmcd=args.cmcd,
                sources=sources, ramp_s=args.ramp)


def run_model(plan: Plan, curve: Curve, report_dir: Path) -> dict[str, Any]:
    """The --model run: the expected curve and what the sampled viewers would make, no network."""
    viewers = sample_viewers(curve, WatchTime(), seed=plan.seed, scale=plan.scale,
                             window_h=plan.window_h, phase_s=plan.phase_s)
    w0, w1 = plan.window_h
    times = [t for t in curve.times_s if w0 * 3600 <= t <= w1 * 3600]
    if not times or times[-1] < w1 * 3600:
        times.append(w1 * 3600)
    achieved = sampled_concurrency(viewers, [t - w0 * 3600 for t in times])
    series = [SeriesPoint(time_h=t / 3600, target=plan.scale * curve.concurrency_at(t),
                          achieved=float(a), server=None, arrivals=plan.scale * curve.rate_at(t))
              for t, a in zip(times, achieved, strict=True)]
    summary = model_summary(plan, curve)
    summary.update({
        "views": sum(1 for v in viewers if v.offset_s == 0.0 and v.start_s >= 0.0),
        "viewers_at_start": sum(1 for v in viewers if v.offset_s > 0.0),
        "achieved_peak": max(achieved, default=0), "achieved_source": "sampled viewers, no network",
        "watching_peak": max(achieved, default=0),
        "server_peak": None, "requests": 0, "errors": 0, "errors_by_kind": {},
        "startup_p50_s": None, "startup_p95_s": None, "stall_ratio": None, "latency_p99_s": None,
    })
    write_report(report_dir, summary, series,
                 mix=expected_mix(LINKS, HEADROOM, [p.time_h for p in series]),
                 day=day_curve(curve, plan.scale))
    return summary


def day_curve(curve: Curve, factor: float) -> list[tuple[float, float]]:
    """The whole day's target concurrency (hours, viewers), for the report's day overview."""
    return [(t / 3600, factor * c) for t, c in zip(curve.times_s, curve.concurrency, strict=True)]


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    curve = calibrate(plan.views, plan.peak)     # UsageError names the feasible range
    curve.self_check()
    law = curve.littles_law()
    print(f"model: {curve.views:,.0f} views, peak {curve.peak:,.0f} at {curve.peak_hour:.2f} h "
          f"after release (prime-time amplitude {curve.amplitude:.3f}); Little's law: mean "
          f"{law['mean_concurrency']:,.0f} = {law['edge_corrected']:,.0f} inside the day, "
          f"{law['ratio']:.3f} of rate x mean watch {curve.mean_watch_s / 60:.0f} min",
          file=sys.stderr)
    report_dir = Path(args.report)
    if args.model:
        summary = run_model(plan, curve, report_dir)
    else:
        summary = run_live(plan, curve, report_dir)
    print(f"replay: views {summary['views']}, target peak {summary['target_peak']}, "
          f"achieved peak {summary['achieved_peak']}, watching peak {summary['watching_peak']}, "
          f"server peak {summary['server_peak']}, "
          f"requests {summary['requests']}, errors {summary['errors']}; report in {report_dir}/")
    return 0
