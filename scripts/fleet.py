"""A local fleet on loopback, checked end to end against Prometheus.

Starts an origin (the bundled demo title), a shield (an edge whose upstream is the origin) and N
edges (upstream: the shield), all with a peer token, plus a real Prometheus scraping every node
each second with config/prometheus/recording.yml loaded. Then it runs N `edge360 replay`s, one per
edge, each replaying its shard (`--shard i/N`, same seed) of the same scaled first-day slice, and
prints the fleet-wide concurrency Prometheus recorded (`fleet:edge360_sessions_active:sum` and its
peak rule) next to the replayers' ground truth (their achieved series summed over the shards, and
the sum of their peaks). Exits 1 when the recorded fleet peak and the truth differ by more than
--tolerance (default 3 %), 2 on bad arguments or when something did not start.

    .venv/bin/python scripts/fleet.py --edges 3 --out /tmp/fleet

Bounded: every start, the replays (`--duration`) and Prometheus queries have deadlines. Every
process it starts is stopped by its PID (SIGTERM, then SIGKILL) at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file, or loaded by a test
from processes import REPO, Procs, free_port, wait_ready

PEER_TOKEN = "fleet-peer-token"
ADMIN_TOKEN = "fleet-admin-token"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (Linux /proc), 0.0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def prometheus_config(path: Path, nodes: list[tuple[str, str]], interval: float) -> None:
    """nodes: (role, host:port). JSON is YAML, so no YAML writer is needed."""
    config = {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"},
        "rule_files": [str(REPO / "config" / "prometheus" / "recording.yml")],
        "scrape_configs": [{
            "job_name": "edge360", "metrics_path": "/metrics",
            "static_configs": [{"targets": [hp], "labels": {"role": role}} for role, hp in nodes],
        }],
    }
    path.write_text(json.dumps(config, indent=2))


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = http_json(url)
    if data.get("status") != "success":
        raise RuntimeError(f"prometheus: {expr}: {data}")
    result = data["data"]["result"]
    assert isinstance(result, list)
    return result


def scalar(prom: str, expr: str) -> float | None:
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else None


def truth(reports: list[Path]) -> tuple[float, float, float]:
    """(peak of the shards' achieved series summed at each instant, sum of their achieved peaks,
    sum of the servers' peaks they sampled). Shards share the same simulated clock; each is read
    as a step function of its own sample times."""
    series: list[list[tuple[float, float]]] = []
    peaks = servers = 0.0
    for d in reports:
        summary = json.loads((d / "report.json").read_text())
        peaks += float(summary["achieved_peak"] or 0)
        servers += float(summary["server_peak"] or 0)
        with open(d / "series.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("achieved")]
        series.append(sorted((float(r["time"]), float(r["achieved"])) for r in rows))
    grid = sorted({t for s in series for t, _ in s})

    def at(s: list[tuple[float, float]], t: float) -> float:
        value = 0.0
        for when, v in s:  # bounded by the series length (one row per second of the run)
            if when > t:
                break
            value = v
        return value
    summed = max((sum(at(s, t) for s in series) for t in grid), default=0.0)
    return summed, peaks, servers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", type=int, default=3, help="edges behind the shield (1-16)")
    p.add_argument("--media", default=str(REPO / "media"), help="origin media root")
    p.add_argument("--title", default="/demo/master.m3u8", help="master playlist path")
    p.add_argument("--views", type=int, default=1_000_000)
    p.add_argument("--peak", type=int, default=60_000)
    p.add_argument("--scale", type=float, default=0.003)
    p.add_argument("--speed", type=float, default=20.0)
    p.add_argument("--window", default="9.6-10.1", help="hours of the day (peak near 9.8 h)")
    p.add_argument("--duration", type=float, default=150.0, help="replay bound, real seconds")
    p.add_argument("--scrape", type=float, default=1.0, help="scrape/evaluation interval, s")
    p.add_argument("--tolerance", type=float, default=0.03)
    p.add_argument("--out", default="", help="directory for logs and reports (default: temp)")
    args = p.parse_args(argv)
    if not 1 <= args.edges <= 16 or args.speed <= 0 or args.scale <= 0 or args.duration <= 0:
        p.error("need 1 <= --edges <= 16 and positive --speed, --scale, --duration")
    if not (Path(args.media) / args.title.strip("/")).is_file():
        p.error(f"no {args.title} under {args.media}")
    for tool in ("prometheus",):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed")
    return args


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `finally` stops the fleet either way."""
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out or tempfile.mkdtemp(prefix="edge360-fleet-"))
    out.mkdir(parents=True, exist_ok=True)
    procs = Procs(out, "fleet")
    py = [sys.executable, "-m", "edge360"]
    idle = round(30.0 / args.speed, 3)
    env = {"EDGE360_PEER_TOKEN": PEER_TOKEN, "EDGE360_ADMIN_TOKEN": ADMIN_TOKEN,
           "EDGE360_SESSIONS_IDLE_TIMEOUT": str(idle),
           # media plays args.speed times faster in a compressed replay (docs/SESSIONS.md)
           "EDGE360_SESSIONS_TIME_SCALE": str(args.speed),
           "EDGE360_SESSIONS_PEAK_WINDOW": str(max(1.0, args.scrape * 2))}
    try:
        origin_p = procs.start("origin", [*py, "serve", "--port", "0", "--media", args.media],
                               env)
        origin = wait_ready(origin_p, "origin", out)
        shield_p = procs.start("shield", [*py, "serve", "--role", "edge", "--port", "0",
                                          "--upstream", origin], env)
        shield = wait_ready(shield_p, "shield", out)
        edge_ps = [procs.start(f"edge{i}", [*py, "serve", "--role", "edge", "--port", "0",
                                            "--upstream", shield], env)
                   for i in range(args.edges)]
        edges = [wait_ready(p, f"edge{i}", out) for i, p in enumerate(edge_ps)]
        nodes = [("origin", origin), ("shield", shield), *(("edge", e) for e in edges)]
        prom = f"http://127.0.0.1:{free_port()}"
        prometheus_config(out / "prometheus.yml", [(r, u.split("//")[1]) for r, u in nodes],
                          args.scrape)
        procs.start("prometheus", ["prometheus", f"--config.file={out / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={out / 'tsdb'}",
                                   f"--web.listen-address={prom.split('//')[1]}",
                                   "--log.level=warn"], stdout_to_log=True)
        wait_prometheus(prom, len(nodes))
        print(f"fleet: origin {origin}, shield {shield}, edges {' '.join(edges)}, "
              f"prometheus {prom}, idle timeout {idle} s, logs {out}", flush=True)

        reports = [out / f"replay{i}" for i in range(args.edges)]
        replays = [procs.start(f"replay{i}", [
            *py, "replay", "--target", edge + args.title, "--views", str(args.views),
            "--peak", str(args.peak), "--scale", str(args.scale), "--speed", str(args.speed),
            "--window", args.window, "--seed", "7", "--shard", f"{i}/{args.edges}", "--loop",
            "--duration", str(args.duration), "--report", str(reports[i])], stdout_to_log=True)
            for i, edge in enumerate(edges)]
        deadline = time.monotonic() + args.duration + 60
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in replays]
        if any(codes):
            raise RuntimeError(f"replays exited {codes} (see replay*.log)")
        time.sleep(3 * args.scrape + 1)  # the last scrapes and rule evaluations
        return report(args, out, prom, reports, nodes,
                      {n: cpu_seconds(p.pid) for n, p in procs.started})
    finally:
        procs.stop_all()


def wait_prometheus(prom: str, targets: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            up = query(prom, "up == 1")
            if len(up) >= targets and query(prom, "fleet:edge360_sessions_active:sum"):
                return
        time.sleep(0.5)
    raise RuntimeError("prometheus did not scrape every node in time")


def report(args: argparse.Namespace, out: Path, prom: str, reports: list[Path],
           nodes: list[tuple[str, str]], cpu: dict[str, float]) -> dict[str, Any]:
    peak_of_sum, sum_of_peaks, server_peaks = truth(reports)
    recorded = scalar(prom, "fleet:edge360_sessions_active:max_over_time_1h") or 0.0
    egress = {r["metric"].get("role", "?"): float(r["value"][1]) for r in query(
        prom, "sum by (role) (edge360_egress_bytes_total)")}
    shield_hits = scalar(prom, 'sum(edge360_cache_requests_total{role="shield",'
                               'result=~"hit|stale"}) / sum(edge360_cache_requests_total'
                               '{role="shield"})')
    edge_hits = scalar(prom, 'sum(edge360_cache_bytes_total{role="edge",result=~"hit|stale"})'
                             ' / sum(edge360_cache_bytes_total{role="edge"})')
    summaries = [json.loads((d / "report.json").read_text()) for d in reports]
    error = abs(recorded - peak_of_sum) / peak_of_sum if peak_of_sum else 1.0
    result = {
        "edges": args.edges, "scale": args.scale, "speed": args.speed, "window": args.window,
        "prometheus_fleet_peak": recorded, "truth_fleet_peak": peak_of_sum,
        "sum_of_replay_peaks": sum_of_peaks, "sum_of_sampled_server_peaks": server_peaks,
        "target_peak": sum(float(s["target_peak"]) for s in summaries),
        "relative_error": round(error, 4), "tolerance": args.tolerance,
        "requests": sum(int(s["requests"]) for s in summaries),
        "errors": sum(sum(s["errors"].values()) if isinstance(s["errors"], dict)
                      else int(s["errors"]) for s in summaries),
        "real_seconds": max(float(s.get("real_seconds", 0)) for s in summaries),
        "egress_bytes_by_role": egress,
        "origin_offload": 1 - egress.get("origin", 0.0) / egress["edge"]
        if egress.get("edge") else None,
        "shield_request_hit_ratio": shield_hits, "edge_byte_hit_ratio": edge_hits,
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "out": str(out),
    }
    (out / "fleet.json").write_text(json.dumps(result, indent=2))
    print(f"fleet concurrency: prometheus recorded peak {recorded:.0f} "
          f"(fleet:edge360_sessions_active:max_over_time_1h), replayers' truth {peak_of_sum:.0f} "
          f"(achieved series summed over {args.edges} shards; sum of their peaks "
          f"{sum_of_peaks:.0f}), error {error:.2%} (tolerance {args.tolerance:.0%})")
    print(f"fleet: {result['requests']} requests, {result['errors']} errors, egress by role "
          f"{ {k: round(v / 1e6, 1) for k, v in egress.items()} } MB, origin offload "
          f"{result['origin_offload']}, shield hit ratio {shield_hits}; report {out}/fleet.json")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with interrupts():
            result = run(args)
    except KeyboardInterrupt:
        print("fleet: interrupted; every process stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 2
    return 0 if result["relative_error"] <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
