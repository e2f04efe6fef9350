"""The headline run: the first day's peak window replayed against ONE edge node at real pace, each
virtual viewer on its own connection, ramped until it breaks.

An edge360 origin and ONE edge360 node (`serve --role edge --workers E`,
sessions.idle_timeout 30 s, sessions.per_ip_per_minute = 0, limits.max_connections = 70,000) serve
a title of tiny 6 s segments (three renditions, each a 2-minute ladder of a few hundred bytes per
segment, replayed with `--loop` so a viewer part-way through the two-hour film keeps requesting and
leaves after the model's watch time, anywhere in the title). `edge360 replay` replays the window
around the day's peak (from 9.7 h after release, as long as the step and at least 0.1 h, so the
peak at 9.78 h is inside) at speed 1 with `--scale = viewers / 60,000` (above 60,000, the day's
peak, `--scale 1` with `--peak` and `--views` raised together: a bigger day of the same shape):
hls.js buffering (the default profile), one keep-alive connection per viewer, `--workers R`
processes and `--source-addresses S` so that no process holds more than ~17,000 descriptors (the
limit here is 20,000) and no source address more than ~12,000 connections: connect() finds a port
quickly only in its half of the ~28,000 ephemeral ports (edge360.replay.limits), and past it each
connect costs the replayer's loop up to a millisecond or more. The edge gets one worker per ~15,000
connections for the descriptors. The viewers already watching when the window opens join over
`--ramp` seconds.

Pinning on 2 cores: the edge node (and the origin, which only sees the first misses) on core 0,
the replayer on core 1, so each side's CPU share is one core's and the limit is named by which
core saturates. Per step (bounded: `--seconds`, at most MAX_STEP_S): target / achieved (the
replayer's truth by the edge's counting rule) / server-reported peak and their difference in %,
viewers watching, requests, errors, stall ratio, pacing, p99; concurrent TCP connections at the
edge (ESTABLISHED sockets on its port, /proc/net/tcp); memory per connection on both sides (RSS
of the whole process tree over its value before the viewers came, per connection at the peak);
CPU per request on both sides (steady state, from the edge's `edge360_requests_total`); open
descriptors per process. The ramp stops after the first step that is not clean: any error, a
server-vs-truth difference above 1 %, or a stall ratio above 1 %, and names the limit.

    .venv/bin/python -m benchmarks.bench_headline [--steps 20000,40000,50000,60000,80000]
        [--seconds 300] [--ramp 60] [--shared-cores] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
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
from benchmarks.media import published

from edge360.replay import limits as replay_limits

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
#: hours after release the replayed window opens; the model's peak is at 9.78 h
WINDOW_START = 9.7


def window_for(seconds: float) -> str:
    """The model window a step of `seconds` replays at speed 1: from WINDOW_START, as long as
    the step (at least 0.1 h: the peak stays inside), so the step is never cut short by its
    window's end."""
    return f"{WINDOW_START:g}-{WINDOW_START + max(0.1, seconds / 3600):.4g}"
FULL_PEAK = 60_000
#: the first day's views (edge360 replay's default --views)
FULL_VIEWS = 1_000_000
MAX_STEP_S = 1200.0
DEFAULT_STEP_S = 300.0
DEFAULT_RAMP_S = 60.0


def bounds_error(seconds: float, ramp: float) -> str | None:
    """Why a step of `seconds` with a join of `ramp` seconds cannot run, or None: a step is
    bounded, and needs steady time after the join."""
    if not 0 < seconds <= MAX_STEP_S:
        return f"a step must last more than 0 and at most {MAX_STEP_S:g} seconds, not {seconds:g}"
    if not 0 <= ramp <= seconds / 3:
        return (f"the join (--ramp) must last between 0 and a third of the step ({seconds / 3:g} "
                f"s), not {ramp:g}: a step needs steady time after it")
    return None
STEADY_AFTER_RAMP_S = 30.0   # the fill of the last joiners' buffers settles by then
MAX_DIFF = 0.01
MAX_STALL = 0.01
BUSY = 0.95
MAX_CONNECTIONS = 70_000     # limits.max_connections: above the 60,000 viewers
#: connections per process / per source address the plan stays under (descriptor limit 20,000
#: here; ~28,000 ephemeral ports per address pair), with the model's peak x 1.1 in mind
PER_EDGE_WORKER = 15_000
PER_REPLAYER = 17_000
#: under what the replayer itself allows (replay.limits: 90 % of the cheap half of the range),
#: as the model's sampled peak may come out a little above the step's viewers
PER_SOURCE = int(0.85 * replay_limits.cheap_ports_per_pair())


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
    published(t)


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


def shape(viewers: int) -> dict[str, int]:
    """Processes and source addresses a step of `viewers` needs (the model's peak x 1.1)."""
    held = viewers * 1.1
    return {"edge_workers": max(1, math.ceil(held / PER_EDGE_WORKER)),
            "replayer_workers": max(1, math.ceil(held / PER_REPLAYER)),
            "source_addresses": max(1, math.ceil(held / PER_SOURCE))}


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a bounded scan of /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(
                    int(entry.name))
    found, todo = [pid], list(parents.get(pid, []))
    while todo and len(found) < 4096:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def established(port: int) -> int:
    """ESTABLISHED TCP sockets whose local port is `port` (the edge's side of each viewer)."""
    want = f":{port:04X} "
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as fh:
            next(fh, None)
            for line in fh:
                fields = line.split(None, 4)
                if len(fields) > 3 and fields[3] == "01" and (fields[1] + " ").endswith(want):
                    count += 1
    return count


def _server_views(edge: str) -> int | None:
    """The node's views_total (/api/stats), for beside the views its rule should count (the
    truth's counted_views: a viewer silent for longer than the rule covers counts again)."""
    try:
        code, _, body = harness.http_get(edge + "/api/stats", timeout=10)
        views = json.loads(body).get("views_total") if code == 200 else None
    except (harness.BenchError, ValueError, AttributeError):
        return None
    return int(views) if isinstance(views, (int, float)) else None


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
    """Once a second: CPU seconds and RSS of both process trees; every 5 s the edge's
    requests_total (a scrape; the replayer scrapes once a second); every 10 s its ESTABLISHED
    connections and both trees' descriptors. Those two walk a line of /proc/net/tcp or an entry
    of /proc/PID/fd per socket: at 30,000 viewers, done every second and every 5 s, they took 8 %
    of a core (perf), CPU the machine under test then lacked; at the peak's plateau every 10 s
    still sees the maximum."""

    def __init__(self, edge_pid: int, edge: str, port: int, replayer_pid: int) -> None:
        super().__init__(daemon=True)
        self.edge_pid, self.edge, self.port, self.replayer_pid = edge_pid, edge, port, replayer_pid
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        edge_tree = tree(self.edge_pid)
        rep_tree = tree(self.replayer_pid)
        while not self.stop_event.is_set():
            if n % 10 == 0:                 # the replayer forks its workers as it starts
                rep_tree = tree(self.replayer_pid)
            s = {"t": time.monotonic(), "edge_cpu": harness.cpu_seconds(self.edge_pid),
                 "rep_cpu": harness.cpu_seconds(self.replayer_pid),
                 "edge_rss": sum(_rss(p) for p in edge_tree),
                 "rep_rss": sum(_rss(p) for p in rep_tree),
                 "edge_fds": max((_fds(p) for p in edge_tree), default=0) if n % 10 == 0 else 0,
                 "rep_fds": max((_fds(p) for p in rep_tree), default=0) if n % 10 == 0 else 0,
                 "requests": _requests_total(self.edge) if n % 5 == 0 else None,
                 "connections": established(self.port) if n % 10 == 0 else None}
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


#: kernel TCP counters (/proc/net/netstat, /proc/net/snmp) a step reports the change of: a
#: full accept queue, SYNs and segments sent again, retransmission timeouts
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "RetransSegs", "TCPTimeouts",
                "TCPAbortOnTimeout")


def tcp_counters() -> dict[str, int]:
    """This machine's TCP counters named in TCP_COUNTERS (all network namespaces' loopback
    traffic of this one shows here)."""
    out: dict[str, int] = {}
    for name in ("/proc/net/netstat", "/proc/net/snmp"):
        with contextlib.suppress(OSError):
            lines = Path(name).read_text().splitlines()
            for head, values in zip(lines[::2], lines[1::2], strict=False):
                for key, value in zip(head.split()[1:], values.split()[1:], strict=False):
                    if key in TCP_COUNTERS and value.lstrip("-").isdigit():
                        out[key] = int(value)
    return out


def _phases(samples: list[dict[str, Any]], t0: float, ramp: float, report: Path
            ) -> dict[str, Any]:
    """When the errors came (series.csv's cumulative count: while the viewers joined, or later)
    and how busy each side was while they joined."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, KeyError):
        rows = list(csv.DictReader((report / "series.csv").read_text().splitlines()))
        hours = [float(r["time"]) for r in rows if r["errors"]]
        errors = [int(r["errors"]) for r in rows if r["errors"]]
        if errors:
            # speed 1: a row's real seconds after the window opened are its hours' difference
            rel = [(h - hours[0]) * 3600 for h in hours]
            in_ramp = max((e for r, e in zip(rel, errors, strict=True) if r <= ramp), default=0)
            out["errors_while_joining"] = in_ramp
            out["errors_after_joining"] = errors[-1] - in_ramp
            first = next((r for r, e in zip(rel, errors, strict=True) if e), None)
            out["first_error_s"] = None if first is None else round(first, 1)
    pts = [s for s in samples if t0 <= s["t"] <= t0 + ramp]
    if len(pts) >= 2:
        a, b = pts[0], pts[-1]
        dt = b["t"] - a["t"]
        out["edge_cpu_busy_joining"] = round((b["edge_cpu"] - a["edge_cpu"]) / dt, 3)
        out["replayer_cpu_busy_joining"] = round((b["rep_cpu"] - a["rep_cpu"]) / dt, 3)
    return out


def _memory(samples: list[dict[str, Any]], edge_base: int) -> dict[str, Any]:
    """Bytes per connection on both sides: the growth of each process tree's RSS between a
    sample with a tenth of the peak's edge connections and the peak's, over the connections
    that came between (fixed costs such as the cache and the interpreters cancel out)."""
    counted = [s for s in samples if s["connections"]]
    if not counted:
        return {}
    top = max(counted, key=lambda s: s["connections"])
    conns = top["connections"]
    low = next((s for s in counted if s["connections"] >= 0.1 * conns), top)
    grown = conns - low["connections"]
    out: dict[str, Any] = {"edge_connections_max": conns, "edge_rss_base_bytes": edge_base}
    if grown >= 0.2 * conns:
        out["edge_bytes_per_connection"] = round((top["edge_rss"] - low["edge_rss"]) / grown)
        out["replayer_bytes_per_connection"] = round((top["rep_rss"] - low["rep_rss"]) / grown)
    return out


def run_step(viewers: int, seconds: float, ramp: float, edge: harness.Server,
             core: tuple[str, ...], tmp: Path, plan: dict[str, int]) -> dict[str, Any]:
    report = tmp / f"report-{viewers}"
    scale = viewers / FULL_PEAK
    port = int(edge.base.rsplit(":", 1)[1])
    edge_base = sum(_rss(p) for p in tree(edge.pid))
    # --scale stops at the whole day: a step above its peak replays a bigger day of the same
    # shape (the peak and the views raised together), so the model still has `viewers` at peak
    model = (["--scale", f"{scale:.6f}"] if viewers <= FULL_PEAK else
             ["--scale", "1", "--peak", str(viewers), "--views", f"{FULL_VIEWS * scale:.0f}"])
    cmd = [*core, sys.executable, "-m", "edge360", "replay",
           "--target", f"{edge.base}/{TITLE}/master.m3u8", *model,
           "--window", window_for(seconds), "--speed", "1", "--loop", "--duration",
           f"{seconds:g}",
           "--ramp", f"{ramp:g}", "--workers", str(plan["replayer_workers"]),
           "--source-addresses", str(plan["source_addresses"]), "--report", str(report)]
    log = tmp / f"replay-{viewers}.stderr"
    tcp_before = tcp_counters()
    t0 = time.monotonic()
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=harness.REPO, stdout=subprocess.DEVNULL, stderr=err)
    mon = Monitor(edge.pid, edge.base, port, proc.pid)
    mon.start()
    try:
        proc.wait(timeout=seconds + 180)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
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
    server_views = _server_views(edge.base)
    achieved, server = rep["achieved_peak"], rep["server_peak"]
    diff = (server - achieved) / achieved if achieved and server is not None else None
    samples = mon.samples
    step: dict[str, Any] = {
        "viewers": viewers, "scale": round(scale, 6), "window": window_for(seconds),
        "seconds": seconds,
        "wall_s": round(wall, 1), "connections": "per-viewer", "ramp_s": ramp, **plan,
        "target_peak": rep["target_peak"], "achieved_peak": achieved, "server_peak": server,
        "watching_peak": rep.get("watching_peak"), "counting_rule": rep.get("counting_rule"),
        "server_vs_truth_pct": None if diff is None else round(diff * 100, 3),
        "viewers_at_start": rep.get("viewers_at_start"), "views": rep.get("views"),
        "viewers_with_media": rep.get("viewers_with_media"),
        "counted_views": rep.get("counted_views"), "server_views": server_views,
        "requests": rep["requests"], "errors": rep["errors"],
        "errors_by_kind": rep.get("errors_by_kind", {}), "stall_ratio": rep["stall_ratio"],
        "errors_by_detail": rep.get("errors_by_detail", {}),
        "pacing_lost": rep.get("pacing_lost"), "pacing_late_p99_s": rep.get("pacing_late_p99_s"),
        "pacing_late_max_s": rep.get("pacing_late_max_s"), "pacing_note": rep.get("pacing_note"),
        "latency_p99_s": rep["latency_p99_s"], "startup_p95_s": rep.get("startup_p95_s"),
        "expected_req_per_s": round(viewers / SEGMENT_S, 1),
        "edge_rss_max_bytes": max((s["edge_rss"] for s in samples), default=0),
        "replayer_rss_max_bytes": max((s["rep_rss"] for s in samples), default=0),
        "edge_fds_max": max((s["edge_fds"] for s in samples), default=0),
        "replayer_fds_max": max((s["rep_fds"] for s in samples), default=0),
        **_memory(samples, edge_base),
        **_steady(samples, t0 + min(ramp + STEADY_AFTER_RAMP_S, seconds / 2)),
        **_phases(samples, t0, ramp, report),
        "tcp_counters": {k: v - tcp_before.get(k, 0) for k, v in tcp_counters().items()},
    }
    why = []
    if step["errors"]:
        joining = step.get("errors_while_joining")
        when = "" if joining is None else (
            f" ({joining} while the viewers joined, first at {step['first_error_s']} s, "
            f"{step['errors_after_joining']} after)")
        why.append(f"{step['errors']} errors "
                   f"{step['errors_by_detail'] or step['errors_by_kind']}{when}")
    if diff is None or abs(diff) > MAX_DIFF:
        why.append(f"server vs truth {step['server_vs_truth_pct']} %")
    if (step["stall_ratio"] or 0) > MAX_STALL:
        why.append(f"stall ratio {step['stall_ratio']}")
    step["clean"] = not why
    step["why_not_clean"] = "; ".join(why)
    step["limit"] = limit(step)
    return step


def limit(step: dict[str, Any]) -> str:
    """Which resource the figures name: a saturated core, descriptors, ports or memory."""
    named = []
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    cores = len(os.sched_getaffinity(0))
    both = (step.get("replayer_cpu_busy") or 0) + (step.get("edge_cpu_busy") or 0)
    if both >= BUSY * cores:
        named.append(f"all {cores} cores ({both:.0%} of one core, edge and replayer together)")
    if (step.get("replayer_cpu_busy") or 0) >= BUSY:
        named.append(f"replayer core ({step['replayer_cpu_busy']:.0%} busy)")
    if step.get("pacing_lost"):
        # the replayer fell behind its own schedule: what it then measured is its own limit
        named.append(f"replayer pacing ({step.get('pacing_note') or 'lost'})")
    if (step.get("edge_cpu_busy") or 0) >= BUSY:
        named.append(f"edge core ({step['edge_cpu_busy']:.0%} busy)")
    for side in ("edge", "replayer"):
        if step[f"{side}_fds_max"] >= 0.9 * fd_limit:
            named.append(f"{side} descriptors ({step[f'{side}_fds_max']} of {fd_limit} in one "
                         "process)")
    conns = step.get("edge_connections_max") or 0
    if conns >= 0.9 * 28_000 * step.get("source_addresses", 1):
        named.append(f"ephemeral ports ({conns} over {step.get('source_addresses', 1)} "
                     "source addresses)")
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = dict(line.split(":", 1) for line in
                       Path("/proc/meminfo").read_text().splitlines())
        avail = int(meminfo["MemAvailable"].split()[0]) * 1024
        total = int(meminfo["MemTotal"].split()[0]) * 1024
        if avail < 0.1 * total:
            named.append(f"memory ({avail / 2**30:.1f} GiB available)")
    return ", ".join(named) or (
        f"none saturated (edge {step.get('edge_cpu_busy', 0):.0%}, replayer "
        f"{step.get('replayer_cpu_busy', 0):.0%}; descriptors {step['edge_fds_max']} / "
        f"{step['replayer_fds_max']} of {fd_limit} per process; {conns} connections)")


def _edge_config(tmp: Path, workers: int) -> Path:
    path = tmp / f"edge-{workers}.toml"
    path.write_text(
        "[sessions]\nidle_timeout = 30\nper_ip_per_minute = 0\n"
        f"[limits]\nmax_connections = {MAX_CONNECTIONS}\n"
        f"[server]\nworkers = {workers}\n")
    return path


def ramp(steps: list[int], seconds: float, ramp_s: float, *, shared: bool = False
         ) -> dict[str, Any]:
    """`shared`: the edge node and the replayer are not pinned, so each may use any core (the
    replayer, not the edge, needs more than one core at 60,000 viewers with a connection each)."""
    why = bounds_error(seconds, ramp_s)
    if why is not None:
        raise ValueError(why)
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if shared:
        pin = harness.Pinning((), (), f"not pinned: the edge node, origin and replayer share "
                                      f"the machine's {len(cores)} cores")
    elif taskset and len(cores) >= 2:
        pin = harness.Pinning((taskset, "-c", str(cores[0])), (taskset, "-c", str(cores[1])),
                              f"edge node and origin on core {cores[0]}, replayer on core "
                              f"{cores[1]} (taskset)")
    else:
        pin = harness.Pinning((), (), "not pinned")
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge360-headline-") as tmp_name:
        tmp = Path(tmp_name)
        make_title(tmp / "media")
        origin = harness.start_edge360("origin", ["--media", str(tmp / "media")], pin, tmp)
        try:
            check_playlists(origin.base)
            for viewers in steps:
                plan = shape(viewers)
                # a fresh edge per step: sessions of the previous step must not be counted
                edge = harness.start_edge360(
                    "edge", ["--upstream", origin.base, "--config",
                             str(_edge_config(tmp, plan["edge_workers"]))], pin, tmp)
                try:
                    hits = warm(edge.base)
                    _, _, body = harness.http_get(edge.base + "/api/stats")
                    stats = json.loads(body)
                    if stats["sessions_active"] or stats["idle_timeout"] != 30:
                        raise harness.BenchError(f"edge not ready for a step: {stats}")
                    step = run_step(viewers, seconds, ramp_s, edge, pin.client, tmp, plan)
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
            "renditions": [r[0] for r in RENDITIONS], "window": window_for(seconds),
            "step_seconds": seconds,
            "ramp_s": ramp_s, "connections": "per-viewer",
            "settings": {"sessions.per_ip_per_minute": 0,
                         "limits.max_connections": MAX_CONNECTIONS,
                         "sessions.idle_timeout": 30,
                         "player_profile": "hlsjs"},
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "steps": out, "largest_clean": max(clean) if clean else None,
            "stopped_by": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="20000,40000,50000,60000,80000",
                        help="peak viewer counts, in order (stops after the first unclean step)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_STEP_S,
                        help=f"real seconds per step (at most {MAX_STEP_S:g})")
    parser.add_argument("--ramp", type=float, default=DEFAULT_RAMP_S,
                        help="real seconds the viewers already watching join over")
    parser.add_argument("--shared-cores", action="store_true",
                        help="pin neither side: both may use every core (default: the edge "
                             "node on one core, the replayer on another)")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    args = parser.parse_args()
    why = bounds_error(args.seconds, args.ramp)
    if why is not None:
        parser.error(why)
    result = ramp([int(s) for s in args.steps.split(",")], args.seconds, args.ramp,
                  shared=args.shared_cores)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
