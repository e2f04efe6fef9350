"""The fast path on vs off vs nginx, side by side in one run (prints a table; records nothing).

    .venv/bin/python -m benchmarks.bench_fastpath [--rounds N] [--duration S]

Origins: edge360 with server.fastpath on, edge360 with it off, nginx, on the same generated media.
Edges (cache hits): an edge360 edge with the fast path on and one with it off (both in front of
the fast origin, warmed), and nginx proxy_cache in front of nginx. Every server on core 0, wrk on
core 1, the servers interleaved round by round; medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import harness, workloads
from benchmarks.harness import Server


def start(role: str, args: list[str], fast: bool, pin: harness.Pinning, logs: Path,
          tmp: Path) -> Server:
    conf = tmp / f"{role}-{'on' if fast else 'off'}.toml"
    conf.write_text(f"[server]\nfastpath = {'true' if fast else 'false'}\n")
    sub = logs / f"{role}-{'on' if fast else 'off'}"
    sub.mkdir()
    return harness.start_edge360(role, [*args, "--config", str(conf)], pin, sub)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_fastpath")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args(argv)
    pin = harness.pinning()
    servers: list[Server] = []
    rows: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edge360-fastbench-") as tmp_name:
        tmp = Path(tmp_name)
        media = harness.make_media(tmp / "media", segment_size=8 << 20, big_size=64 << 20,
                                   herd_count=0, herd_size=1 << 20, seed=workloads.SEED)
        scripts = {"done": tmp / "done.lua", "ranges": tmp / "ranges.lua",
                   "first_handed": tmp / "first_handed.lua"}
        # wrk asks with the Accept-Encoding urllib's warming and checks send: a stored playlist
        # varies on it, and a request that selects no stored variant is a MISS
        same = '\nwrk.headers["Accept-Encoding"] = "identity"\n'
        scripts["done"].write_text(harness.WRK_DONE_LUA + same)
        scripts["ranges"].write_text(harness.WRK_RANGES_LUA + same)
        scripts["first_handed"].write_text(harness.WRK_FIRST_HANDED_LUA + same)
        logs = tmp / "logs"
        logs.mkdir()
        try:
            media_args = ["--media", str(media.root)]
            origins = {"fast on": start("origin", media_args, True, pin, logs, tmp),
                       "fast off": start("origin", media_args, False, pin, logs, tmp),
                       "nginx": harness.start_nginx("origin", media.root, pin, tmp / "ngx-o")}
            servers += origins.values()
            up = ["--upstream", origins["fast on"].base]
            edges = {"fast on": start("edge", up, True, pin, logs, tmp),
                     "fast off": start("edge", up, False, pin, logs, tmp),
                     "nginx": harness.start_nginx("edge", media.root, pin, tmp / "ngx-e",
                                                  upstream=origins["nginx"].base)}
            servers += edges.values()
            q = f"?sid={harness.SID}"
            objects = [media.master + q, media.small + q, media.segment + q, media.big + q]
            # edge first, right after warming: the master's max-age is 30 s
            loads = sorted(workloads.wrk_workloads(media, quick=False, edge=True,
                                                   big_connections=16),
                           key=lambda w: w.role != "edge")
            for _ in range(args.rounds):
                # every round: the master's max-age (30 s) ends within a round
                for server in edges.values():
                    workloads.warm(server, objects)
                for w in loads:
                    group = origins if w.role == "origin" else edges
                    for name, server in group.items():
                        try:
                            records = workloads.run_one(server, w, round_no=0,
                                                        duration=args.duration, pin=pin,
                                                        scripts=scripts)
                        except harness.BenchError as e:  # recorded as not run, never guessed
                            print(f"not run: {w.name} on {name}: {e}", file=sys.stderr)
                            continue
                        for record in records:
                            key = (w.name, record["metric"], name)
                            rows.setdefault(key, []).append(float(record["value"]))
        finally:
            for server in servers:
                server.stop()
    print("| workload | metric | fast on | fast off | nginx |\n|---|---|---:|---:|---:|")
    for wname, metric in dict.fromkeys((k[0], k[1]) for k in rows):
        cells = [rows.get((wname, metric, n)) for n in ("fast on", "fast off", "nginx")]
        print(f"| {wname} | {metric} | " + " | ".join(
            "not run" if not c else f"{statistics.median(c):,.3g}"
            if statistics.median(c) < 100 else f"{statistics.median(c):,.0f}"
            for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
