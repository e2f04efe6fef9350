"""Overload control at full scale, on loopback (docs/OVERLOAD.md, "Proof by replay").

Two runs, each with real `edge360 serve` processes and one `edge360 replay`:

    .venv/bin/python scripts/overload.py queue --out /tmp/overload-queue
    .venv/bin/python scripts/overload.py steer --out /tmp/overload-steer

`queue`: an origin and one edge with `sessions.capacity` = --capacity (default 2000, --workers
edge processes), replayed at the peak hour with 1.3 x its capacity watching. Passes when no
admitted viewer stalled, the edge never counted more than its capacity, its peak agrees with the
replayer's truth within 1 %, viewers were queued and admitted as others left; prints the queue's
waits.

`steer`: an origin and two edges that are each other's steering pathways (capacities --capacity
and half of it), replayed against the first at 80 % of their joint capacity; half way through the
second edge is killed. Passes when, while both were up, each edge held its capacity share within
10 % of the viewers, and the replay's stall ratio stayed under 1 %.

The title is generated (three renditions of 15 s segments of a few KiB, BANDWIDTH 300-700
kbit/s, looped): tiny bodies keep the machine's work on requests, and equal player buffer goals
keep the replayer's "already watching" viewers within what the node can see (docs/OVERLOAD.md).
Each run writes its processes' logs, the replay report and `overload.json` into --out, and exits
0 when it passes, 1 when it does not, 2 when something did not start. Every process it starts is
stopped by its PID at the end, on Ctrl-C too. Run it on a machine of its own: figures taken
beside other work are not the node's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file, or loaded by a test
from processes import Procs, free_port

KEYS = "overload:overload-script-secret"
LADDER = (("lo", 300_000), ("mid", 500_000), ("hi", 700_000))
SEGMENT_S, SEGMENTS = 15, 12


def make_film(root: Path) -> Path:
    rnd = random.Random(5)
    title = root / "film"
    master = ["#EXTM3U", "#EXT-X-VERSION:3"]
    for rendition, bandwidth in LADDER:
        (title / rendition).mkdir(parents=True, exist_ok=True)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{SEGMENT_S}",
                 "#EXT-X-PLAYLIST-TYPE:VOD"]
        for i in range(SEGMENTS):
            (title / rendition / f"s{i:03d}.ts").write_bytes(rnd.randbytes(3000 + i))
            lines += [f"#EXTINF:{SEGMENT_S}.0,", f"s{i:03d}.ts"]
        lines.append("#EXT-X-ENDLIST")
        (title / rendition / "index.m3u8").write_text("\n".join(lines) + "\n")
        master += [f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth}", f"{rendition}/index.m3u8"]
    (title / "master.m3u8").write_text("\n".join(master) + "\n")
    then = time.time() - 3600  # published long ago: the origin serves it at once
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then))
    return root


def stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/api/stats", timeout=5) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def replay(procs: Procs, args: argparse.Namespace, target: str, peak_viewers: float,
           report: Path, duration: float | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "edge360", "replay", "--target", target, "--views", "1000000",
            "--peak", "60000", "--scale", f"{peak_viewers / 60000:.6g}", "--speed",
            str(args.speed), "--window", args.window, "--loop", "--report", str(report),
            "--workers", str(args.replay_workers), "--seed", "1"]
    if duration is not None:
        argv += ["--duration", str(duration)]
    return procs.start("replay", argv)


def node_env(args: argparse.Namespace, capacity: int) -> dict[str, str]:
    return {"EDGE360_SESSIONS_IDLE_TIMEOUT": f"{30 / args.speed:g}",
            "EDGE360_SESSIONS_TIME_SCALE": f"{args.speed:g}",
            "EDGE360_SESSIONS_CAPACITY": str(capacity), "EDGE360_ADMISSION_KEYS": KEYS,
            "EDGE360_SESSIONS_QUEUE_HOLD": f"{args.queue_hold:g}",
            "EDGE360_SESSIONS_PER_IP_PER_MINUTE": "0"}


def run_queue(procs: Procs, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    media = make_film(out / "media")
    origin = procs.serve("origin", ["--port", "0", "--media", str(media)])
    edge = procs.serve("edge", ["--role", "edge", "--port", "0", "--upstream", origin,
                                "--workers", str(args.workers)], node_env(args, args.capacity))
    proc = replay(procs, args, f"{edge}/film/master.m3u8", 1.3 * args.capacity, out / "report")
    proc.wait()
    report = json.loads((out / "report" / "report.json").read_text())
    achieved, server = report["achieved_peak"], report["server_peak"] or 0
    checks = {
        "admitted viewers never stall": report["stall_ratio"] in (0, 0.0, None),
        "the edge never counts past its capacity": server <= args.capacity,
        "its count agrees with the truth within 1 %": abs(server - achieved) <= max(
            1, 0.01 * achieved),
        "viewers queue and get in as others leave": report["queue"]["admitted_from_queue"] > 0,
    }
    return {"capacity": args.capacity, "achieved_peak": achieved, "server_peak": server,
            "stall_ratio": report["stall_ratio"], "queue": report["queue"],
            "errors_by_kind": report["errors_by_kind"], "checks": checks}


def run_steer(procs: Procs, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    media = make_film(out / "media")
    caps = {"e1": args.capacity, "e2": max(1, args.capacity // 2)}
    ports = {name: free_port() for name in caps}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    pathways = ",".join(f"{n}={b}" for n, b in bases.items())
    origin = procs.serve("origin", ["--port", "0", "--media", str(media)])
    for name, cap in caps.items():
        procs.serve(name, ["--role", "edge", "--port", str(ports[name]), "--upstream", origin,
                           "--workers", str(args.workers)],
                    {**node_env(args, cap), "EDGE360_STEERING_PATHWAYS": pathways,
                     "EDGE360_STEERING_TTL": "1"})
    proc = replay(procs, args, f"{bases['e1']}/film/master.m3u8", 0.8 * sum(caps.values()),
                  out / "report", duration=args.duration)
    loads: list[tuple[int, int]] = []
    seen: list[dict[str, Any]] = []  # each second: both nodes' seats, and e1's view of e2
    kill_at = time.monotonic() + args.duration / 2
    while time.monotonic() < kill_at and proc.poll() is None:
        time.sleep(1)
        one, two = stats(bases["e1"]), stats(bases["e2"])
        loads.append((int(one["sessions_active"]), int(two["sessions_active"])))
        seen.append({"starting": [one.get("sessions_starting"), two.get("sessions_starting")],
                     "e1_sees": one.get("steering", {})})
    victim = next(p for n, p in procs.started if n == "e2")
    os.kill(victim.pid, signal.SIGKILL)
    proc.wait()
    report = json.loads((out / "report" / "report.json").read_text())
    share = caps["e1"] / sum(caps.values())
    busy = [(a, b) for a, b in loads if a + b >= 0.5 * max(sum(x) for x in loads)] or loads
    worst = max(abs(a / (a + b) - share) for a, b in busy if a + b) if busy else 1.0
    checks = {"loads within 10 % of the capacity shares": worst <= 0.10,
              "a killed edge's viewers move with a stall ratio under 1 %":
                  (report["stall_ratio"] or 0) < 0.01 and report["steering"]["pathway_moves"] > 0}
    return {"capacities": caps, "share_error_max": round(worst, 4), "loads": loads, "seen": seen,
            "stall_ratio": report["stall_ratio"], "steering": report["steering"],
            "errors_by_kind": report["errors_by_kind"], "checks": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", choices=("queue", "steer"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--capacity", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="processes per edge")
    parser.add_argument("--replay-workers", type=int, default=2)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--window", default="9.5-10.5")
    parser.add_argument("--duration", type=float, default=300.0, help="steer: real seconds")
    parser.add_argument("--queue-hold", type=float, default=120.0,
                        help="sessions.queue_hold (Retry-After is at most half of it)")
    args = parser.parse_args(argv)
    if args.capacity < 2 or args.speed <= 0 or args.duration <= 10 or args.queue_hold < 1:
        print("overload: --capacity >= 2, --speed > 0, --duration > 10, --queue-hold >= 1",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    procs = Procs(args.out, "overload")
    try:
        result = (run_queue if args.run == "queue" else run_steer)(procs, args, args.out)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        print(f"overload: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 2
    finally:
        procs.stop_all()
    (args.out / "overload.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "loads"}, indent=2))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
