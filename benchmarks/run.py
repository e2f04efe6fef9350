"""edge360 against nginx, side by side: the one benchmark command (see benchmarks/README.md).

    .venv/bin/python -m benchmarks.run [--quick] [--rounds N] [--duration S] [--only GROUPS]

Measures every comparison group (benchmarks/groups.py: origin, edge, herd, https) in one run:
an edge360 origin and an nginx origin on the same generated media, and an edge360 edge and an
nginx proxy cache in front of each origin, over plain HTTP and HTTPS, all pinned to one core with
the clients on the other, each workload on both interleaved round by round
(benchmarks/compare.py). Writes benchmarks/results/<date>.json and regenerates
benchmarks/RESULTS.md from all results files. `--only` runs chosen groups instead, comparisons or
edge360-only figures (benchmarks/only.py), one results file each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import compare, only, results, workloads
from benchmarks.bench_headline import DEFAULT_RAMP_S, DEFAULT_STEP_S, MAX_STEP_S, bounds_error
from benchmarks.groups import GROUPS, ORIGINS
from benchmarks.harness import BenchError

HERD_WAITERS = 1000
#: s_time processes at once: each waits on its own round trips, so a few keep the server busy
#: (the client's core is recorded: when it is full, handshakes/s is the client's limit)
HANDSHAKE_CLIENTS = 8


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one round, 1-second runs, tiny objects, a herd of 20")
    p.add_argument("--rounds", type=int, help="rounds per workload (default 5; quick 1)")
    p.add_argument("--duration", type=float,
                   help="seconds per wrk or s_time run (default 4; quick 1)")
    # 64 connections of 8 MiB saturate the client's core on loopback here (wrk copies every
    # byte in), which only lengthens the queue: p99 grows 4x while GB/s falls (README)
    p.add_argument("--big-connections", type=int, default=16,
                   help="connections for the 8 MiB segment workloads (default 16)")
    p.add_argument("--herd-waiters", type=int,
                   help=f"concurrent waiters of a cold-miss herd (default {HERD_WAITERS}; "
                   "quick 20)")
    p.add_argument("--handshake-clients", type=int, default=HANDSHAKE_CLIENTS,
                   help="concurrent openssl s_time processes for full TLS handshakes "
                   f"(default {HANDSHAKE_CLIENTS})")
    p.add_argument("--edge-origins", default=",".join(ORIGINS),
                   help="the origins the edges are measured in front of "
                   f"(default {','.join(ORIGINS)})")
    p.add_argument("--results-dir", type=Path, default=results.RESULTS_DIR,
                   help="where the results file goes and RESULTS.md is generated from")
    p.add_argument("--markdown", type=Path, default=results.RESULTS_MD,
                   help="the RESULTS.md to regenerate")
    p.add_argument("--render", action="store_true",
                   help="only regenerate the markdown from the results files")
    p.add_argument("--headline-steps", metavar="N,N,...", default=only.HEADLINE_STEPS,
                   help="viewers at each step of the headline ramp (default "
                   f"{only.HEADLINE_STEPS})")
    p.add_argument("--headline-ramp", type=float, metavar="S",
                   help="real seconds the headline's viewers already watching join over "
                   f"(bench_headline's --ramp; default {DEFAULT_RAMP_S:g})")
    p.add_argument("--headline-seconds", type=float, metavar="S",
                   help=f"real seconds per headline step (default {DEFAULT_STEP_S:g}, at most "
                   f"{MAX_STEP_S:g})")
    p.add_argument("--headline-shared-cores", action="store_true",
                   help="pin neither the edge nor the replayer in the headline")
    p.add_argument("--only", metavar="GROUPS",
                   help="only these groups, one results file each (comma-separated: the "
                   f"comparisons {', '.join(GROUPS)}; the edge360-only figures "
                   f"{', '.join(only.GROUPS)}; see benchmarks/groups.py and only.py)")
    args = p.parse_args(argv)
    if args.only is not None:
        args.only = [g.strip() for g in args.only.split(",") if g.strip()]
        unknown = [g for g in args.only if g not in GROUPS and g not in only.GROUPS]
        if unknown or not args.only:
            p.error(f"--only takes {', '.join(GROUPS + only.GROUPS)}; "
                    f"not {', '.join(unknown) or 'nothing'}")
    args.edge_origins = [o.strip() for o in args.edge_origins.split(",") if o.strip()]
    if not args.edge_origins or any(o not in ORIGINS for o in args.edge_origins) \
            or len(set(args.edge_origins)) != len(args.edge_origins):
        p.error(f"--edge-origins takes {' and/or '.join(ORIGINS)}, each once")
    steps = args.headline_steps.split(",")
    if not all(s.strip().isdigit() and int(s) > 0 for s in steps):
        p.error(f"--headline-steps takes viewer counts, N,N,...; not {args.headline_steps!r}")
    args.headline_extra = []
    for flag, value in (("--ramp", args.headline_ramp), ("--seconds", args.headline_seconds)):
        if value is not None:
            if not value > 0:
                p.error(f"--headline-{flag[2:]} must be > 0 seconds")
            args.headline_extra += [flag, f"{value:g}"]
    # what bench_headline would refuse, refused before anything starts (its own defaults)
    ramp_s = only.QUICK_RAMP_S if args.quick else DEFAULT_RAMP_S
    why = bounds_error(args.headline_seconds or (only.QUICK_STEP_S if args.quick
                                                 else DEFAULT_STEP_S),
                       ramp_s if args.headline_ramp is None else args.headline_ramp)
    if why is not None:
        p.error(f"--headline-seconds/--headline-ramp: {why}")
    if args.headline_shared_cores:
        args.headline_extra.append("--shared-cores")
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    args.herd_waiters = args.herd_waiters or (20 if args.quick else HERD_WAITERS)
    if min(args.rounds, args.duration, args.herd_waiters, args.handshake_clients,
           args.big_connections) < 1:
        p.error("--rounds, --duration, --herd-waiters, --handshake-clients and "
                "--big-connections must be at least 1")
    return args


def herd_main(argv: Sequence[str]) -> int:
    """The herd client, run pinned to the client core by `run_herd`: prints one JSON line."""
    url, waiters, timeout, sid_prefix = argv[0], int(argv[1]), float(argv[2]), argv[3]
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # the default loop measures the same server, only a slower client
        runner = asyncio.run
    print(json.dumps(runner(workloads.herd(url, waiters, timeout, sid_prefix))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_herd"]:
        return herd_main(argv[1:])
    args = parse_args(argv)
    if args.render:
        results.write_markdown(args.results_dir, args.markdown)
        print(f"wrote {args.markdown}")
        return 0
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.run", *argv])
    if args.only:
        return run_only(args, command)
    try:
        doc = compare.measure(args, command, list(GROUPS))
    except (BenchError, subprocess.TimeoutExpired) as e:
        print(f"benchmark not run: {e}", file=sys.stderr)
        return 1
    path = results.write_results(doc, args.results_dir)
    results.write_markdown(args.results_dir, args.markdown)
    print(f"wrote {path} and {args.markdown}")
    print("\n".join(results.render_results(args.results_dir).splitlines()[7:40]))
    return 0


def run_only(args: argparse.Namespace, command: str) -> int:
    """The asked groups, one results file each; a group that fails is reported (and written
    nowhere) while the others still run."""
    failed = 0
    for group in args.only:
        try:
            if group in GROUPS:
                doc = {**compare.measure(args, command, [group]), "group": group}
            else:
                doc = only.run_group(group, args.quick, command, args.headline_steps,
                                     args.headline_extra)
        except (BenchError, subprocess.TimeoutExpired, KeyError, ValueError) as e:
            print(f"{group}: not run: {e}", file=sys.stderr)
            failed += 1
            continue
        path = results.write_results(doc, args.results_dir)
        print(f"wrote {path}")
    results.write_markdown(args.results_dir, args.markdown)
    print(f"wrote {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
