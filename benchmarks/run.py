"""edge360 against nginx, side by side: the one benchmark command (see benchmarks/README.md).

    .venv/bin/python -m benchmarks.run [--quick] [--rounds N] [--duration S]

Starts an edge360 origin and an nginx origin on the same generated media (and, when the edge
answers, an edge360 edge and an nginx proxy_cache in front of them), pins every server to one core
and wrk to the other, runs each workload on both interleaved round by round, writes
benchmarks/results/<date>.json and regenerates benchmarks/RESULTS.md from all results files.
A workload that cannot run is recorded as not run, with the reason; nothing is ever estimated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness, only, results, workloads
from benchmarks.harness import BenchError, Pinning, Server

HERD_WAITERS = 1000
HERD_OBJECT = 1 << 20  # 1 MiB: one slice, one cache entry, one upstream fetch when coalesced
HERD_TIMEOUT = 60.0
HERD = "edge: cold-miss herd"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one round, 1-second wrk runs, the small-object workload only")
    p.add_argument("--rounds", type=int, help="rounds per workload (default 5; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 4; quick 1)")
    # 64 connections of 8 MiB saturate the client's core on loopback here (wrk copies every
    # byte in), which only lengthens the queue: p99 grows 4x while GB/s falls (README)
    p.add_argument("--big-connections", type=int, default=16,
                   help="connections for the 8 MiB segment workload (default 16)")
    p.add_argument("--herd-waiters", type=int, default=HERD_WAITERS,
                   help=f"concurrent waiters of the cold-miss herd (default {HERD_WAITERS})")
    p.add_argument("--results-dir", type=Path, default=results.RESULTS_DIR,
                   help="where the results file goes and RESULTS.md is generated from")
    p.add_argument("--markdown", type=Path, default=results.RESULTS_MD,
                   help="the RESULTS.md to regenerate")
    p.add_argument("--render", action="store_true",
                   help="only regenerate the markdown from the results files")
    p.add_argument("--only", metavar="GROUPS",
                   help="instead of the comparison, run these edge360-only groups "
                   f"(comma-separated: {', '.join(only.GROUPS)}; see benchmarks/only.py)")
    args = p.parse_args(argv)
    if args.only:
        args.only = [g.strip() for g in args.only.split(",") if g.strip()]
        unknown = [g for g in args.only if g not in only.GROUPS]
        if unknown or not args.only:
            p.error(f"--only takes {', '.join(only.GROUPS)}; not {', '.join(unknown)}")
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    if args.rounds < 1 or args.duration < 1 or args.herd_waiters < 1:
        p.error("--rounds, --duration and --herd-waiters must be at least 1")
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


def upstream_fetches(server: Server, path: str) -> int | None:
    """How many requests this edge has sent upstream (for a herd: before minus after).
    edge360: its edge360_upstream_requests_total counter; nginx: the origin's herd log lines."""
    if server.name == "nginx":
        log = server.extra["origin_workdir"] / "origin-herd.log"
        if not log.exists():
            return 0
        return sum(1 for line in log.read_text().splitlines() if f"GET {path}" in line)
    status, _, body = harness.http_get(server.base + "/metrics")
    if status != 200:
        return None
    total = 0.0
    found = False
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("edge360_upstream_requests_total"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return int(total) if found else None


def run_herd(server: Server, path: str, args: argparse.Namespace, pin: Pinning,
             round_no: int) -> list[dict[str, Any]]:
    before = upstream_fetches(server, path)
    cmd = [*pin.client, sys.executable, "-m", "benchmarks.run", "_herd", server.base + path,
           str(args.herd_waiters), str(HERD_TIMEOUT), f"herd{round_no:02d}"]
    out = subprocess.run(cmd, cwd=harness.REPO, capture_output=True, text=True,
                         timeout=HERD_TIMEOUT + 60)
    if out.returncode != 0:
        raise BenchError(f"herd client failed: {out.stderr.strip()[-300:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    after = upstream_fetches(server, path)
    fetches = after - before if before is not None and after is not None else None
    common = {"workload": HERD, "server": server.name, "role": "edge",
              "round": round_no, "object": path, **data}
    runs = [{**common, "metric": m, "value": data[m]}
            for m in ("ttfb_p50_ms", "ttfb_p99_ms", "ttfb_max_ms")]
    runs.append({**common, "metric": "upstream_fetches", "value": fetches})
    return runs


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
        doc = measure(args, command=command)
    except BenchError as e:
        print(f"benchmark not run: {e}", file=sys.stderr)
        return 1
    path = results.write_results(doc, args.results_dir)
    results.write_markdown(args.results_dir, args.markdown)
    print(f"wrote {path} and {args.markdown}")
    print("\n".join(results.render_results(args.results_dir).splitlines()[7:40]))
    return 0


def run_only(args: argparse.Namespace, command: str) -> int:
    """The edge360-only groups, one results file each; a group that fails is reported (and
    written nowhere) while the others still run."""
    failed = 0
    for group in args.only:
        try:
            doc = only.run_group(group, args.quick, command)
        except (BenchError, subprocess.TimeoutExpired, KeyError, ValueError) as e:
            print(f"{group}: not run: {e}", file=sys.stderr)
            failed += 1
            continue
        path = results.write_results(doc, args.results_dir)
        print(f"wrote {path}")
    results.write_markdown(args.results_dir, args.markdown)
    print(f"wrote {args.markdown}")
    return 1 if failed else 0


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Start the servers, run every workload interleaved, stop the servers; the results doc."""
    import shutil

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        raise BenchError("nginx is not installed (the reference is missing)")
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed")
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load_before = harness.loadavg()
    pin = harness.pinning()
    slice_module = harness.nginx_has_slice(nginx)
    notes: list[str] = [
        "Server CPU = utime+stime deltas of the server process (and children) from /proc over "
        "each wrk run; nginx runs with master_process off, so its one process does all the work.",
        "Every request carries ?sid=benchmark01 (a valid session id): edge360 rewrites playlists "
        "and tracks the session as in production; nginx ignores the query.",
    ]
    if not slice_module:
        notes.append("nginx has no slice module: its proxy cached the 64 MiB object whole.")
    not_run: list[dict[str, str]] = []
    runs: list[dict[str, Any]] = []
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="edge360-bench-") as tmp_name:
        tmp = Path(tmp_name)
        small_files = args.quick  # the quick run never requests the large objects
        media = harness.make_media(
            tmp / "media", segment_size=(1 << 16) if small_files else 8 << 20,
            big_size=(1 << 20) if small_files else 64 << 20,
            herd_count=0 if args.quick else args.rounds, herd_size=HERD_OBJECT,
            seed=workloads.SEED)
        scripts = {"done": tmp / "done.lua", "ranges": tmp / "ranges.lua",
                   "first_handed": tmp / "first_handed.lua"}
        scripts["done"].write_text(harness.WRK_DONE_LUA)
        scripts["ranges"].write_text(harness.WRK_RANGES_LUA)
        scripts["first_handed"].write_text(harness.WRK_FIRST_HANDED_LUA)
        logs = tmp / "logs"
        logs.mkdir()
        try:
            pairs: dict[str, dict[str, Server]] = {"origin": {}, "edge": {}}
            ours = harness.start_edge360("origin", ["--media", str(media.root)], pin, logs)
            servers.append(ours)
            ref = harness.start_nginx("origin", media.root, pin, tmp / "nginx-origin",
                                      slice_module=slice_module)
            servers.append(ref)
            pairs["origin"] = {"edge360": ours, "nginx": ref}
            warm_paths = [media.master, media.small]
            if not args.quick:
                warm_paths += [media.segment, media.big]
            edge_reason = start_edges(pairs, media, pin, logs, tmp, slice_module, servers,
                                      warm_paths)
            work = workloads.wrk_workloads(media, quick=args.quick, edge=edge_reason is None,
                                           big_connections=args.big_connections)
            if edge_reason is not None:
                skipped = workloads.wrk_workloads(media, quick=args.quick, edge=True,
                                                  big_connections=args.big_connections)
                names = [w.name for w in skipped if w.role == "edge"]
                if not args.quick:
                    names.append(HERD)
                not_run += [{"workload": n, "reason": f"not run: edge not available "
                             f"({edge_reason})"} for n in names]
            failed: dict[str, str] = {}
            for round_no in range(1, args.rounds + 1):
                for w in work:
                    if w.name in failed:
                        continue
                    for name in results.SERVERS:  # edge360 first, then nginx, every round
                        try:
                            runs += workloads.run_one(pairs[w.role][name], w, round_no=round_no,
                                                      duration=args.duration, pin=pin,
                                                      scripts=scripts)
                        except BenchError as e:
                            failed[w.name] = str(e)
                            break
                if edge_reason is None and not args.quick and HERD not in failed:
                    for name in results.SERVERS:
                        try:
                            runs += run_herd(pairs["edge"][name], media.herd[round_no - 1],
                                             args, pin, round_no)
                        except (BenchError, subprocess.TimeoutExpired, ValueError) as e:
                            failed[HERD] = f"{name}: {e}"
                            break
            not_run += [{"workload": n, "reason": f"failed: {r}"} for n, r in failed.items()]
            runs = [r for r in runs if r["workload"] not in failed]
        finally:
            for server in reversed(servers):
                server.stop()
    summary, unpaired = results.summarize(runs)
    notes += [f"unpaired, not compared: {u}" for u in unpaired]
    described = [{"name": w.name, "role": w.role, "request": w.request(),
                  "description": w.description} for w in work]
    if edge_reason is None and not args.quick:
        described.append({"name": HERD, "role": "edge",
                          "request": {"method": "GET", "path": "/bench/v/herd_<round>.ts"
                                      "?sid=herd<round><waiter>",
                                      "connections": args.herd_waiters,
                                      "client": "aiohttp, one connection per waiter"},
                          "description": f"{args.herd_waiters} concurrent first requests of a "
                          f"fresh {HERD_OBJECT}-byte object per round; TTFB per waiter"})
    return {
        "date": started,
        "command": command,
        "mode": "quick" if args.quick else "full",
        "machine": {**harness.machine(nginx), "loadavg_before": load_before,
                    "loadavg_after": harness.loadavg()},
        "pinning": pin.note,
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "big_connections": args.big_connections,
                     "herd_waiters": args.herd_waiters, "seed": workloads.SEED,
                     "nginx_slice": slice_module},
        "workloads": described,
        "runs": runs,
        "summary": summary,
        "not_run": not_run,
        "notes": notes,
        "elapsed_s": round(time.time() - datetime.fromisoformat(started).timestamp(), 1),
    }


def start_edges(pairs: dict[str, dict[str, Server]], media: harness.Media, pin: Pinning,
                logs: Path, tmp: Path, slice_module: bool, servers: list[Server],
                warm_paths: list[str]) -> str | None:
    """Start the edge360 edge and, if it answers a content request with X-Cache, the nginx
    proxy cache; warm both. Returns why the edge is not available, or None when both edges
    are up and warm."""
    origin = pairs["origin"]["edge360"]
    try:
        edge = harness.start_edge360("edge", ["--upstream", origin.base], pin, logs, timeout=20)
    except BenchError as e:
        return str(e)
    servers.append(edge)
    try:
        status, headers, _ = harness.http_get(edge.base + media.small + f"?sid={harness.SID}")
    except BenchError as e:
        return str(e)
    if status != 200 or "x-cache" not in headers:
        return f"GET {media.small} answered {status}, X-Cache {headers.get('x-cache', 'absent')}"
    ref_origin = pairs["origin"]["nginx"]
    proxy = harness.start_nginx("edge", media.root, pin, tmp / "nginx-proxy",
                                upstream=ref_origin.base, slice_module=slice_module)
    proxy.extra["origin_workdir"] = ref_origin.workdir
    servers.append(proxy)
    pairs["edge"] = {"edge360": edge, "nginx": proxy}
    try:
        for server in pairs["edge"].values():
            workloads.warm(server, warm_paths)
    except BenchError as e:
        return f"warming failed: {e}"
    return None


if __name__ == "__main__":
    sys.exit(main())
