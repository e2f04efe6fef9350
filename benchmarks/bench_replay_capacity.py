"""How many concurrent virtual viewers one replayer core sustains at real pacing (6 s segments).

nginx (one process, `master_process off`, pinned to the last core) serves a static title of 6 s
tiny segments, fast enough never to be the bottleneck; the replayer (this process, pinned to core
0) runs N looping viewers at speed 1 through `run_share`, the same code `edge360 replay` runs, for
a bounded time per step, and the viewer count is ramped (3,000, 6,000, ...) until a step is not
clean. The viewers are already watching (their hls.js buffer full), so each fetches one segment
per 6 s from the start, each on its own connection as `edge360 replay` does by default
(`--connections N`: a shared pool of N instead). One process holds at most ~19,900 connections
here (20,000 descriptors), and so does nginx: a per-viewer step stays below that. Per step:
the replayer's CPU share and CPU µs per request (steady state, after the arrival ramp), errors,
the stall ratio, p99 latency and nginx's CPU share (to show it was not the limit). A step is
clean when there are no errors, no stalls and the replayer core is below 95 % busy.

    .venv/bin/python -m benchmarks.bench_replay_capacity [--steps 3000,6000,10000,15000]
        [--seconds 90] [--json OUT]

(`--server aiohttp` serves from a small single-core aiohttp server instead, as the first
measurement did; that server, not the replayer, was then the bottleneck.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

SEGMENT_S = 6.0
SEGMENTS = 20
CLEAN_BUSY = 0.95
MAX_STEP_S = 110.0  # bounded: every step stays under 2 minutes

NGINX_CONF = """worker_processes 1;
worker_rlimit_nofile 20000;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 19900; use epoll; }}
http {{
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 65; keepalive_requests 10000000;
    access_log off; server_tokens off;
    client_body_temp_path {work}/cb; proxy_temp_path {work}/pt; fastcgi_temp_path {work}/ft;
    uwsgi_temp_path {work}/ut; scgi_temp_path {work}/st;
    server {{ listen 127.0.0.1:{port} backlog=8192; root {root}; }}
}}
"""


def _title(root: Path, segment_bytes: int) -> None:
    t = root / "t"
    t.mkdir(parents=True, exist_ok=True)
    (t / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n")
    (t / "lo.m3u8").write_text("\n".join(
        ["#EXTM3U", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD"]
        + [f"#EXTINF:{SEGMENT_S},\ns{i}.ts" for i in range(SEGMENTS)]
        + ["#EXT-X-ENDLIST", ""]))
    for i in range(SEGMENTS):
        (t / f"s{i}.ts").write_bytes(b"\x47" * segment_bytes)


def _serve_aiohttp(port: int, segment_bytes: int) -> None:
    import uvloop
    from aiohttp import web

    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    body = b"\x47" * segment_bytes
    master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n"
    media = "\n".join(["#EXTM3U", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD"]
                      + [f"#EXTINF:{SEGMENT_S},\ns{i}.ts" for i in range(SEGMENTS)]
                      + ["#EXT-X-ENDLIST", ""]).encode()

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "master.m3u8":
            return web.Response(body=master, content_type="application/vnd.apple.mpegurl")
        if name == "lo.m3u8":
            return web.Response(body=media, content_type="application/vnd.apple.mpegurl")
        return web.Response(body=body, content_type="video/mp2t")

    app = web.Application()
    app.router.add_get("/t/{name}", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=8192)


def _wait_port(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise harness.BenchError(f"the test server never listened on port {port}")


async def _measure(url: str, viewers: int, seconds: float, ramp: float,
                   server_pid: int | None, connections: int | None) -> dict[str, Any]:
    from edge360.replay.model import Viewer
    from edge360.replay.player import PlayerConfig
    from edge360.replay.runner import Share, run_share
    from edge360.replay.truth import Rule

    # already watching (offset > 0): a full buffer, one segment per 6 s from the first request
    crowd = [Viewer(index=i, start_s=ramp * i / viewers, watch_s=10 * seconds, offset_s=1.0)
             for i in range(viewers)]
    share = Share(viewers=crowd, config=PlayerConfig(master_url=url, speed=1.0, loop=True, seed=1),
                  epoch=time.monotonic(), rule=Rule(30.0, None), connections=connections,
                  deadline=time.monotonic() + seconds)
    marks: list[tuple[float, float, int, float]] = []

    def tick(stats: Any) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = harness.cpu_seconds(server_pid) if server_pid else 0.0
        marks.append((time.monotonic(), usage.ru_utime + usage.ru_stime, stats.requests,
                      server_cpu))
    stats = await run_share(share, asyncio.Event(), tick)
    steady = [m for m in marks if m[0] >= share.epoch + ramp + SEGMENT_S]
    if len(steady) < 2:
        raise harness.BenchError("run too short for a steady-state measurement")
    (t0, c0, r0, s0), (t1, c1, r1, s1) = steady[0], steady[-1]
    cpu_per_req = (c1 - c0) / max(r1 - r0, 1)
    busy = (c1 - c0) / (t1 - t0)
    errors = dict(stats.errors)
    stall = round(stats.stall_s / stats.played_s, 5) if stats.played_s else None
    return {
        "viewers": viewers, "seconds": seconds, "segment_s": SEGMENT_S,
        "connections": "per-viewer" if connections is None else connections,
        "steady_s": round(t1 - t0, 1),
        "steady_req_per_s": round((r1 - r0) / (t1 - t0), 1),
        "replayer_cpu_busy": round(busy, 3),
        "cpu_us_per_request": round(cpu_per_req * 1e6, 1),
        "viewers_per_core": int(SEGMENT_S / cpu_per_req) if cpu_per_req else None,
        "server_cpu_busy": round((s1 - s0) / (t1 - t0), 3) if server_pid else None,
        "requests": stats.requests, "errors": errors, "error_count": sum(errors.values()),
        "stall_ratio": stall,
        "latency_p99_s": stats.latency.percentile(0.99),
        "startup_p95_s": stats.startup.percentile(0.95),
        "clean": not errors and not stall and busy < CLEAN_BUSY,
    }


def _why_not_clean(step: dict[str, Any]) -> str:
    why = []
    if step["replayer_cpu_busy"] >= CLEAN_BUSY:
        why.append(f"replayer core {step['replayer_cpu_busy']:.0%} busy")
    if step["error_count"]:
        why.append(f"{step['error_count']} errors {step['errors']}")
    if step["stall_ratio"]:
        why.append(f"stall ratio {step['stall_ratio']}")
    if (step.get("server_cpu_busy") or 0) >= CLEAN_BUSY:
        why.append(f"server core {step['server_cpu_busy']:.0%} busy")
    # where the cores stood, so a stall with neither core saturated is read as such
    why.append(f"(replayer {step['replayer_cpu_busy']:.0%}, server "
               f"{step.get('server_cpu_busy') or 0:.0%} busy in steady state; p99 "
               f"{step['latency_p99_s'] * 1000:.0f} ms)")
    return "; ".join(why)


def ramp(steps: list[int], seconds: float, segment_bytes: int, server: str,
         connections: int | None = None) -> dict[str, Any]:
    """Run the steps in order (each bounded), stopping after the first step that is not clean."""
    seconds = min(seconds, MAX_STEP_S)
    port = harness.free_port()
    cores = sorted(os.sched_getaffinity(0))
    proc: subprocess.Popen[bytes] | None = None
    helper: Any = None
    with tempfile.TemporaryDirectory(prefix="edge360-replay-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if server == "nginx":
                nginx = shutil.which("nginx") or "/usr/sbin/nginx"
                if not Path(nginx).exists():
                    raise harness.BenchError("nginx is not installed")
                _title(tmp / "www", segment_bytes)
                conf = tmp / "nginx.conf"
                conf.write_text(NGINX_CONF.format(work=tmp, port=port, root=tmp / "www"))
                taskset = shutil.which("taskset")
                pin = [taskset, "-c", str(cores[-1])] if taskset and len(cores) > 1 else []
                proc = subprocess.Popen(
                    [*pin, nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log"),
                     "-g", "daemon off; master_process off;"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                server_pid: int | None = proc.pid
            else:
                helper = multiprocessing.get_context("spawn").Process(
                    target=_serve_aiohttp, args=(port, segment_bytes), daemon=True)
                helper.start()
                server_pid = helper.pid
            _wait_port(port)
            os.sched_setaffinity(0, {cores[0]})
            try:
                import uvloop
                runner: Any = uvloop.run
            except ImportError:
                runner = asyncio.run
            out: list[dict[str, Any]] = []
            for viewers in steps:
                step = runner(_measure(f"http://127.0.0.1:{port}/t/master.m3u8", viewers,
                                       seconds, min(SEGMENT_S * 2, seconds / 4), server_pid,
                                       connections))
                step["why_not_clean"] = "" if step["clean"] else _why_not_clean(step)
                out.append(step)
                print(json.dumps(step), flush=True)
                if not step["clean"]:
                    break
        finally:
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            if helper is not None:
                if helper.pid is not None and helper.is_alive():
                    os.kill(helper.pid, signal.SIGTERM)
                helper.join(5)
    clean = [s["viewers"] for s in out if s["clean"]]
    last = out[-1]
    stopped = (last["why_not_clean"] if not last["clean"]
               else f"nothing: the ramp ended at {last['viewers']} viewers, still clean")
    return {"server": server, "segment_bytes": segment_bytes, "step_seconds": seconds,
            "connections": "per-viewer" if connections is None else connections,
            "pinning": f"replayer on core {cores[0]}, {server} on core {cores[-1]}",
            "steps": out, "largest_clean": max(clean) if clean else None, "stopped_by": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="3000,6000,10000,15000",
                        help="viewer counts, in order (stops after the first unclean step)")
    parser.add_argument("--viewers", type=int, help="one step of this many viewers")
    parser.add_argument("--seconds", type=float, default=90.0, help="per step (at most 110)")
    parser.add_argument("--segment-bytes", type=int, default=16 * 1024)
    parser.add_argument("--server", choices=("nginx", "aiohttp"), default="nginx")
    parser.add_argument("--connections", type=int, default=None,
                        help="a shared pool of N connections (default: one per viewer)")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    args = parser.parse_args()
    steps = [args.viewers] if args.viewers else [int(s) for s in args.steps.split(",")]
    result = ramp(steps, args.seconds, args.segment_bytes, args.server, args.connections)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
