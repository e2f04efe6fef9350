"""The headline run: the first day's peak window replayed against ONE edge, ramped until it breaks.

An edge360 origin and ONE edge360 edge (`serve --role edge`, fast path on, sessions.idle_timeout
30 s, the real value at speed 1) serve a title of tiny 6 s segments (three renditions, each a
2-minute ladder of a few hundred bytes per segment, replayed with `--loop` so a viewer part-way
through the two-hour film keeps requesting at real pacing). `edge360 replay` replays the window
around the day's peak (9.7-9.8 h after release, peak at 9.78 h) at speed 1 with
`--scale = viewers / 60,000`, so the window's peak concurrency is the step's target; the viewers
already watching at the window's start are created by the replayer (each at a random phase of
one segment). The viewers share one bounded keep-alive pool (`--connections`).

Pinning on 2 cores: the edge (and the origin, which only sees the first misses) on core 0, the
replayer (`--workers 1`) on core 1, so each side's CPU share is one core's and the limit is
named by which core saturates. Per step (bounded: `--seconds`, at most 180 real seconds):
target / achieved (the replayer's truth) / server-reported peak and their difference in %,
requests, errors, stall ratio, p99, edge CPU % and RSS, replayer CPU %, open descriptors on both
sides, and the steady-state requests/s (from the edge's `edge360_requests_total`) with CPU µs per
request on both sides. The ramp stops after the first step that is not clean: any error, a
server-vs-truth difference above 1 %, or a stall ratio above 1 % (viewers no longer at real
pacing).

    .venv/bin/python -m benchmarks.bench_headline [--steps 2000,4000,6000,8000,10000]
        [--seconds 120] [--connections 512] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

SEGMENT_S = 6.0
SEGMENTS = 20                # 2 minutes per rendition; --loop covers the two-hour film
#: the servers gzip a rewritten playlist of >= 1024 bytes for a client that accepts gzip; the
#: replayer gunzips playlists, but every playlist here stays under that size (checked), so each
#: step measures the same uncompressed exchanges it always has.
GZIP_MIN = 1024
SEGMENT_BYTES = 376          # two TS packets: "a few hundred bytes"
RENDITIONS = (("r0", 400_000, "640x360"), ("r1", 1_200_000, "1280x720"),
              ("r2", 3_000_000, "1920x1080"))
TITLE = "h"
WINDOW = "9.7-9.8"           # hours after release; the model's peak is at 9.78 h
FULL_PEAK = 60_000
MAX_STEP_S = 180.0
STEADY_SKIP_S = 20.0         # start-up bursts of the viewers already watching settle by then
MAX_DIFF = 0.01
MAX_STALL = 0.01
FD_LIMIT_NOTE = 20_000
BUSY = 0.95


def make_title(root: Path) -> None:
    t = root / TITLE
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, bw, res in RENDITIONS:
        lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={res}", f"{name}/index.m3u8"]
        d = t / name
        d.mkdir(parents=True, exist_ok=True)
        media = ["#EXTM3U", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD"]
        for i in range(SEGMENTS):
            media += [f"#EXTINF:{SEGMENT_S:g},", f"{i}.ts"]
            (d / f"{i}.ts").write_bytes(b"\x47" + bytes([i % 256]) * (SEGMENT_BYTES - 1))
        media.append("#EXT-X-ENDLIST")
        (d / "index.m3u8").write_text("\n".join(media) + "\n")
    (t / "master.m3u8").write_text("\n".join(lines) + "\n")


def _paths() -> list[str]:
    out = [f"/{TITLE}/master.m3u8"]
    for name, _, _ in RENDITIONS:
        out.append(f"/{TITLE}/{name}/index.m3u8")
        out += [f"/{TITLE}/{name}/{i}.ts" for i in range(SEGMENTS)]
    return out


def check_playlists(origin: str) -> None:
    """A viewer's rewritten playlists (at the origin, whose sessions are not measured) come
    back uncompressed (see GZIP_MIN)."""
    for p in _paths()[:2]:
        code, headers, body = harness.http_get(
            f"{origin}{p}?sid=headlinecheck01", {"Accept-Encoding": "gzip, deflate"})
        if code != 200 or "content-encoding" in headers or len(body) >= GZIP_MIN:
            raise harness.BenchError(f"{p}: {code}, {len(body)} bytes, "
                                     f"{headers.get('content-encoding')}: would be gzipped")


def warm(edge: str) -> int:
    """Every object fetched through the edge as its peer (no session is opened), so the step
    measures hits and the viewers already watching do not start with a cold-miss herd."""
    hits = 0
    auth = {"Authorization": f"Bearer {harness.PEER_TOKEN}"}
    for _ in range(2):
        hits = 0
        for p in _paths():
            code, headers, _ = harness.http_get(edge + p, auth)
            if code != 200:
                raise harness.BenchError(f"warming {p}: {code}")
            hits += headers.get("x-cache", "") == "HIT"
    return hits


def _status(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _requests_total(edge: str) -> float | None:
    try:
        code, _, body = harness.http_get(edge + "/metrics", timeout=5)
    except harness.BenchError:
        return None
    if code != 200:
        return None
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("edge360_requests_total{") or line.startswith("edge360_requests_total "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Monitor(threading.Thread):
    """Once a second: CPU seconds, RSS and descriptors of both sides; every 5 s the edge's
    requests_total (a scrape costs the edge a little CPU; the replayer scrapes once a second)."""

    def __init__(self, edge_pid: int, edge: str, replayer_pid: int) -> None:
        super().__init__(daemon=True)
        self.edge_pid, self.edge, self.replayer_pid = edge_pid, edge, replayer_pid
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            s = {"t": time.monotonic(), "edge_cpu": harness.cpu_seconds(self.edge_pid),
                 "rep_cpu": harness.cpu_seconds(self.replayer_pid),
                 "edge_rss": _status(self.edge_pid).get("VmRSS", 0),
                 "rep_rss": _status(self.replayer_pid).get("VmRSS", 0),
                 "edge_fds": _fds(self.edge_pid), "rep_fds": _fds(self.replayer_pid),
                 "requests": _requests_total(self.edge) if n % 5 == 0 else None}
            self.samples.append(s)
            n += 1
            self.stop_event.wait(1.0)


def _steady(samples: list[dict[str, Any]], start: float) -> dict[str, Any]:
    pts = [s for s in samples if s["t"] >= start and s["requests"] is not None]
    if len(pts) < 2:
        return {}
    a, b = pts[0], pts[-1]
    dt, dr = b["t"] - a["t"], b["requests"] - a["requests"]
    edge_cpu, rep_cpu = b["edge_cpu"] - a["edge_cpu"], b["rep_cpu"] - a["rep_cpu"]
    return {
        "steady_s": round(dt, 1), "steady_req_per_s": round(dr / dt, 1),
        "edge_cpu_busy": round(edge_cpu / dt, 3), "replayer_cpu_busy": round(rep_cpu / dt, 3),
        "edge_cpu_us_per_request": round(edge_cpu / dr * 1e6, 1) if dr else None,
        "replayer_cpu_us_per_request": round(rep_cpu / dr * 1e6, 1) if dr else None,
    }


def run_step(viewers: int, seconds: float, connections: int, edge: harness.Server,
             core: tuple[str, ...], tmp: Path) -> dict[str, Any]:
    report = tmp / f"report-{viewers}"
    scale = viewers / FULL_PEAK
    cmd = [*core, sys.executable, "-m", "edge360", "replay",
           "--target", f"{edge.base}/{TITLE}/master.m3u8", "--scale", f"{scale:.6f}",
           "--window", WINDOW, "--speed", "1", "--loop", "--duration", f"{seconds:g}",
           "--workers", "1", "--connections", str(connections), "--report", str(report)]
    log = tmp / f"replay-{viewers}.stderr"
    t0 = time.monotonic()
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=harness.REPO, stdout=subprocess.DEVNULL, stderr=err)
    mon = Monitor(edge.pid, edge.base, proc.pid)
    mon.start()
    try:
        proc.wait(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    mon.stop_event.set()
    mon.join(10)
    wall = time.monotonic() - t0
    if not (report / "report.json").exists():
        tail = log.read_text(errors="replace")[-400:]
        raise harness.BenchError(f"replay of {viewers} viewers wrote no report: {tail}")
    rep = json.loads((report / "report.json").read_text())
    achieved, server = rep["achieved_peak"], rep["server_peak"]
    diff = (server - achieved) / achieved if achieved and server is not None else None
    samples = mon.samples
    step: dict[str, Any] = {
        "viewers": viewers, "scale": round(scale, 6), "window": WINDOW, "seconds": seconds,
        "wall_s": round(wall, 1), "connections": connections,
        "target_peak": rep["target_peak"], "achieved_peak": achieved, "server_peak": server,
        "server_vs_truth_pct": None if diff is None else round(diff * 100, 3),
        "viewers_at_start": rep.get("viewers_at_start"), "views": rep.get("views"),
        "requests": rep["requests"], "errors": rep["errors"],
        "errors_by_kind": rep.get("errors_by_kind", {}), "stall_ratio": rep["stall_ratio"],
        "latency_p99_s": rep["latency_p99_s"], "startup_p95_s": rep.get("startup_p95_s"),
        "expected_req_per_s": round(viewers / SEGMENT_S, 1),
        "edge_rss_max_bytes": max((s["edge_rss"] for s in samples), default=0),
        "replayer_rss_max_bytes": max((s["rep_rss"] for s in samples), default=0),
        "edge_fds_max": max((s["edge_fds"] for s in samples), default=0),
        "replayer_fds_max": max((s["rep_fds"] for s in samples), default=0),
        **_steady(samples, t0 + STEADY_SKIP_S),
    }
    why = []
    if step["errors"]:
        why.append(f"{step['errors']} errors {step['errors_by_kind']}")
    if diff is None or abs(diff) > MAX_DIFF:
        why.append(f"server vs truth {step['server_vs_truth_pct']} %")
    if (step["stall_ratio"] or 0) > MAX_STALL:
        why.append(f"stall ratio {step['stall_ratio']}")
    step["clean"] = not why
    step["why_not_clean"] = "; ".join(why)
    step["limit"] = limit(step)
    return step


def limit(step: dict[str, Any]) -> str:
    """Which resource the figures name: a saturated core, descriptors or ports."""
    named = []
    if (step.get("replayer_cpu_busy") or 0) >= BUSY:
        named.append(f"replayer core ({step['replayer_cpu_busy']:.0%} busy)")
    if (step.get("edge_cpu_busy") or 0) >= BUSY:
        named.append(f"edge core ({step['edge_cpu_busy']:.0%} busy)")
    for side in ("edge", "replayer"):
        if step[f"{side}_fds_max"] >= 0.9 * FD_LIMIT_NOTE:
            named.append(f"{side} descriptors ({step[f'{side}_fds_max']} of {FD_LIMIT_NOTE})")
    if step["replayer_fds_max"] >= 0.9 * 28_000:
        named.append("ephemeral ports")
    return ", ".join(named) or (
        f"none saturated (edge {step.get('edge_cpu_busy', 0):.0%}, replayer "
        f"{step.get('replayer_cpu_busy', 0):.0%}; descriptors {step['edge_fds_max']} / "
        f"{step['replayer_fds_max']} of {FD_LIMIT_NOTE}; ports <= {step['connections']})")


def ramp(steps: list[int], seconds: float, connections: int) -> dict[str, Any]:
    seconds = min(seconds, MAX_STEP_S)
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if taskset and len(cores) >= 2:
        pin = harness.Pinning((taskset, "-c", str(cores[0])), (taskset, "-c", str(cores[1])),
                              f"edge and origin on core {cores[0]}, replayer (--workers 1) on "
                              f"core {cores[1]} (taskset)")
    else:
        pin = harness.Pinning((), (), "not pinned")
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge360-headline-") as tmp_name:
        tmp = Path(tmp_name)
        make_title(tmp / "media")
        (tmp / "edge.toml").write_text("[sessions]\nidle_timeout = 30\n[server]\nfastpath = true\n")
        origin = harness.start_edge360("origin", ["--media", str(tmp / "media")], pin, tmp)
        try:
            check_playlists(origin.base)
            for viewers in steps:
                # a fresh edge per step: sessions of the previous step must not be counted
                edge = harness.start_edge360(
                    "edge", ["--upstream", origin.base, "--config", str(tmp / "edge.toml")],
                    pin, tmp)
                try:
                    hits = warm(edge.base)
                    _, _, body = harness.http_get(edge.base + "/api/stats")
                    stats = json.loads(body)
                    if stats["sessions_active"] or stats["idle_timeout"] != 30:
                        raise harness.BenchError(f"edge not ready for a step: {stats}")
                    step = run_step(viewers, seconds, connections, edge, pin.client, tmp)
                    step["warm_hits"] = hits
                finally:
                    edge.stop()
                out.append(step)
                print(json.dumps(step), flush=True)
                if not step["clean"]:
                    break
        finally:
            origin.stop()
    clean = [s["viewers"] for s in out if s["clean"]]
    last = out[-1]
    stopped = (f"{last['viewers']} viewers: {last['why_not_clean']}; limit: {last['limit']}"
               if not last["clean"] else
               f"nothing: the ramp ended at {last['viewers']} viewers, still clean "
               f"(limit figures: {last['limit']})")
    return {"pinning": pin.note, "segment_bytes": SEGMENT_BYTES, "segments": SEGMENTS,
            "renditions": [r[0] for r in RENDITIONS], "window": WINDOW, "step_seconds": seconds,
            "connections": connections, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "steps": out, "largest_clean": max(clean) if clean else None,
            "stopped_by": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="2000,4000,6000,8000,10000",
                        help="peak viewer counts, in order (stops after the first unclean step)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help=f"real seconds per step (at most {MAX_STEP_S:g})")
    parser.add_argument("--connections", type=int, default=512,
                        help="the replayer's keep-alive pool")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    args = parser.parse_args()
    result = ramp([int(s) for s in args.steps.split(",")], args.seconds, args.connections)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
