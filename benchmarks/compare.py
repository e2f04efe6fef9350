"""One comparison run: start the servers the asked groups need (benchmarks/fleet.py), run every
workload on edge360 and on nginx interleaved round by round (edge360, nginx, edge360, nginx, ...)
so drift falls on both, then the cold-miss herds; stop the servers; one results document.

A workload that cannot run is recorded as not run, with the reason; nothing is ever estimated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness, nginxref, results, workloads
from benchmarks.fleet import EDGE_STALE_WHILE_REVALIDATE, Fleet
from benchmarks.groups import (
    disk_workloads,
    edge_workloads,
    herd_name,
    https_workloads,
    origin_workloads,
)
from benchmarks.harness import BenchError, Pinning, Server
from benchmarks.media import Media, make_media
from benchmarks.workloads import WrkWorkload

HERD_TIMEOUT = 60.0
#: a client core busier than this (median over the rounds) may have been the limit
CLIENT_BUSY = 0.9


@dataclass(frozen=True)
class Sizes:
    """Object sizes of a run: the real ones, or tiny ones for a --quick smoke run."""

    segment: int
    big: int
    piece: int
    herd: int
    #: stored whole by an edge360 edge (under edge.piece_bytes): a low rung's 6 s segment
    mid: int


FULL = Sizes(segment=8 << 20, big=64 << 20, piece=1 << 20, herd=1 << 20, mid=3 << 19)
QUICK = Sizes(segment=1 << 16, big=1 << 20, piece=1 << 16, herd=1 << 16, mid=3 << 15)


def _scripts(tmp: Path) -> dict[str, Path]:
    scripts = {"done": tmp / "done.lua", "ranges": tmp / "ranges.lua"}
    scripts["done"].write_text(harness.WRK_DONE_LUA)
    scripts["ranges"].write_text(harness.WRK_RANGES_LUA)
    return scripts


def origin_fetches(origin: Server, path: str) -> int | None:
    """Requests the origin has answered for a herd object so far. nginx: its herd-only log;
    edge360: its segment requests (nothing but the herd asks it for a segment meanwhile)."""
    if origin.name == "nginx":
        assert origin.workdir is not None
        log = origin.workdir / "origin-herd.log"
        if not log.exists():
            return 0
        return sum(1 for line in log.read_text().splitlines() if f"GET {path}" in line)
    status, _, body = harness.http_get(origin.base + "/metrics")
    if status != 200:
        return None
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("edge360_requests_total{") and 'kind="segment"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def run_herd(edge: Server, name: str, path: str, args: argparse.Namespace, pin: Pinning,
             round_no: int) -> list[dict[str, Any]]:
    """One herd on one edge: the herd client (pinned to the client core) in a child interpreter,
    and the upstream fetches it caused, counted at the origin behind the edge."""
    origin: Server = edge.extra["origin"]
    before = origin_fetches(origin, path)
    cmd = [*pin.client, sys.executable, "-m", "benchmarks.run", "_herd", edge.base + path,
           str(args.herd_waiters), str(HERD_TIMEOUT), f"herd{round_no:02d}"]
    out = subprocess.run(cmd, cwd=harness.REPO, capture_output=True, text=True,
                         timeout=HERD_TIMEOUT + 60)
    if out.returncode != 0:
        raise BenchError(f"herd client failed: {out.stderr.strip()[-300:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if not data["completed"]:
        raise BenchError(f"no waiter of the herd got a body: {data['statuses']}")
    after = origin_fetches(origin, path)
    fetches = after - before if before is not None and after is not None else None
    common = {"workload": name, "server": edge.name, "role": "edge",
              "pair": f"edge/{origin.name}", "round": round_no, "object": path, **data}
    runs = [{**common, "metric": m, "value": data[m]}
            for m in ("ttfb_p50_ms", "ttfb_p99_ms", "ttfb_max_ms")]
    runs.append({**common, "metric": "upstream_fetches", "value": fetches})
    return runs


def client_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Where the client's core was (nearly) full: that rate may be the client's limit."""
    busy: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if run.get("client_cpu_s") is not None and run.get("duration_s"):
            busy.setdefault((run["workload"], run["server"]), []).append(
                run["client_cpu_s"] / run["duration_s"])
    notes = []
    for (workload, server), values in busy.items():
        share = statistics.median(values)
        if share >= CLIENT_BUSY:
            notes.append(f"{workload}, {server}: the client's core was {share:.0%} busy "
                         "(median): its rate may be the client's limit; the figures per "
                         "server CPU-second or per handshake do not depend on it.")
    return notes


def tls_notes(runs: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, dict[str, str]] = {}
    for run in runs:
        tls = run.get("check", {}).get("tls")
        if tls:
            seen.setdefault(run["server"], tls)
    if not seen:
        return []
    return ["TLS as openssl s_client negotiated it: " + "; ".join(
        f"{server}: " + ", ".join(f"{k} {v}" for k, v in tls.items())
        for server, tls in sorted(seen.items())) + "."]


def _start_edges(fleet: Fleet, upstream: str, tls: bool, wanted: list[str], warm: list[str],
                 not_run: list[dict[str, str]]) -> bool:
    why = fleet.start_edges(upstream, tls=tls, warm_paths=warm)
    if why is not None:
        not_run += [{"workload": n, "reason": f"not run: edge not available ({why})"}
                    for n in wanted]
    return why is None


def _disk_edge(fleet: Fleet, media: Media, upstream: str, args: argparse.Namespace, piece: int,
               not_run: list[dict[str, str]]) -> list[WrkWorkload]:
    """The disk-tier edge's workloads in front of `upstream`, or none (recorded as not run)."""
    disk = disk_workloads(media, upstream, big_connections=args.big_connections, piece=piece)
    why = fleet.start_disk_edge(upstream, [media.segment, media.big, media.mid])
    if why is None:
        return disk
    not_run += [{"workload": w.name, "reason": f"not run: edge not available ({why})"}
                for w in disk]
    return []


def measure(args: argparse.Namespace, command: str, groups: list[str]) -> dict[str, Any]:
    """Start the servers, run the groups' workloads interleaved, stop the servers; the doc."""
    nginx = nginxref.nginx_binary()
    if nginx is None:
        raise BenchError("nginx is not installed (the reference is missing)")
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed")
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load_before = harness.loadavg()
    pin = harness.pinning()
    slice_module = nginxref.nginx_has_slice(nginx)
    sizes = QUICK if args.quick else FULL
    origins = list(args.edge_origins)
    notes: list[str] = [
        "Server CPU = utime+stime deltas of the server process (and children) from /proc over "
        "each run; nginx runs with master_process off, so its one process does all the work.",
        "Every request carries ?sid=benchmark01 (a valid session id): edge360 rewrites playlists "
        "and tracks the session as in production; nginx ignores the query.",
    ]
    if groups != ["origin"]:
        notes.append("Edge rows compare an edge360 edge with an nginx proxy_cache in front of "
                     "the same origin (named in the row); both ask it with the peer token and "
                     "without sid, and both origins give every file the same Cache-Control "
                     "(checked at start).")
    if args.quick:
        notes.append(f"Quick smoke run: objects shrunk (segment {sizes.segment} B, ranges of "
                     f"{sizes.piece} B from {sizes.big} B, herd object {sizes.herd} B); the "
                     "figures prove the plumbing and measure nothing.")
    if not slice_module:
        notes.append("nginx has no slice module: its proxy cached the 64 MiB object whole.")
    not_run: list[dict[str, str]] = []
    runs: list[dict[str, Any]] = []
    work: list[WrkWorkload] = []
    herds: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge360-bench-") as tmp_name:
        tmp = Path(tmp_name)
        media = make_media(tmp / "media", segment_size=sizes.segment, big_size=sizes.big,
                           mid_size=sizes.mid,
                           herd_count=args.rounds * len(origins) if "herd" in groups else 0,
                           herd_size=sizes.herd, seed=workloads.SEED)
        scripts = _scripts(tmp)
        fleet = Fleet(media, pin, tmp, slice_module=slice_module)
        try:
            fleet.start_origins()
            if "origin" in groups:
                work += origin_workloads(media, big_connections=args.big_connections,
                                         piece=sizes.piece)
            for upstream in origins if "edge" in groups or "herd" in groups else ():
                plain = edge_workloads(media, upstream, big_connections=args.big_connections,
                                       piece=sizes.piece) if "edge" in groups else []
                names = [w.name for w in plain]
                names += [herd_name(upstream)] if "herd" in groups else []
                if _start_edges(fleet, upstream, False, names,
                                [media.master, media.live, media.small, media.segment,
                                 media.big], not_run):
                    work += plain
                    herds += [upstream] if "herd" in groups else []
                    if "edge" in groups:
                        work += _disk_edge(fleet, media, upstream, args, sizes.piece, not_run)
            for upstream in origins if "https" in groups else ():
                secure = https_workloads(media, upstream, big_connections=args.big_connections,
                                         handshake_clients=args.handshake_clients)
                if _start_edges(fleet, upstream, True, [w.name for w in secure],
                                [media.small, media.segment], not_run):
                    work += secure
            failed: dict[str, str] = {}
            for round_no in range(1, args.rounds + 1):
                for w in work:
                    if w.name in failed:
                        continue
                    for name in results.SERVERS:  # edge360 first, then nginx, every round
                        try:
                            runs += workloads.run_one(fleet.pairs[w.pair_key][name], w,
                                                      round_no=round_no, duration=args.duration,
                                                      pin=pin, scripts=scripts)
                        except BenchError as e:
                            failed[w.name] = f"{name}: {e}"
                            break
                for upstream in herds:
                    herd = herd_name(upstream)
                    path = media.herd[origins.index(upstream) * args.rounds + round_no - 1]
                    for name in results.SERVERS if herd not in failed else ():
                        try:
                            runs += run_herd(fleet.pairs[f"edge/{upstream}"][name], herd, path,
                                             args, pin, round_no)
                        except (BenchError, subprocess.TimeoutExpired, ValueError) as e:
                            failed[herd] = f"{name}: {e}"
                            break
            not_run += [{"workload": n, "reason": f"failed: {r}"} for n, r in failed.items()]
            runs = [r for r in runs if r["workload"] not in failed]
        finally:
            fleet.stop()
    summary, unpaired = results.summarize(runs)
    notes += [f"unpaired, not compared: {u}" for u in unpaired]
    notes += client_notes(runs) + tls_notes(runs)
    described = [{"name": w.name, "role": w.role, "pair": w.pair_key, "request": w.request(),
                  "description": w.description} for w in work]
    described += [{"name": herd_name(u), "role": "edge", "pair": f"edge/{u}",
                   "request": {"method": "GET", "path": "/bench/v/herd_<n>.ts"
                               "?sid=herd<round><waiter>", "connections": args.herd_waiters,
                               "client": "aiohttp, one connection per waiter"},
                   "description": f"{args.herd_waiters} concurrent first requests of a fresh "
                   f"{sizes.herd}-byte object per round (the same object for both edges, each "
                   f"cold); TTFB per waiter; upstream fetches counted at the {u} origin"}
                  for u in herds]
    return {
        "date": started,
        "command": command,
        "mode": "quick" if args.quick else "full",
        "groups": groups,
        "machine": {**harness.machine(nginx), "loadavg_before": load_before,
                    "loadavg_after": harness.loadavg()},
        "pinning": pin.note,
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "big_connections": args.big_connections,
                     "herd_waiters": args.herd_waiters,
                     "handshake_clients": args.handshake_clients,
                     "edge_origins": origins, "seed": workloads.SEED,
                     "nginx_slice": slice_module, "lifetimes_s": nginxref.LIFETIMES,
                     "edge360_stale_while_revalidate_s": EDGE_STALE_WHILE_REVALIDATE},
        "workloads": described,
        "runs": runs,
        "summary": summary,
        "not_run": not_run,
        "notes": notes,
        "elapsed_s": round(time.time() - datetime.fromisoformat(started).timestamp(), 1),
    }
