"""Server CPU-seconds per request with 1 and 2 workers: `edge360 serve --workers N` against nginx
with `worker_processes N` (master process on), both measured the same way.

    .venv/bin/python -m benchmarks.run --only workers [--quick]

Each server answers a 218-byte master playlist (edge360 rewrites it for ?sid=), a 218-byte .ts
at the origin and, when the edge360 edge answers with X-Cache, the same .ts as a cache hit
through an edge (edge360 edge with N workers in front of a 1-worker edge360 origin; nginx
proxy_cache with N workers in front of a 1-worker nginx origin). wrk (-t1, pinned to the last
core) runs a fixed duration per run; server CPU is utime+stime of the supervisor (nginx master)
and all its children (workers) from /proc over the run, divided by the requests wrk completed.
Rounds are interleaved edge360, nginx, edge360, nginx, ... for each worker count.

On 2 cores the client needs one: 1-worker servers are pinned to core 0, 2-worker servers may
use both cores and so share one with wrk. The raw requests/s speed-up from 1 to 2 workers says
little here; CPU per request is the figure (it shows what a second process costs or saves).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness, nginxref, results, workloads
from benchmarks.harness import BenchError, Pinning, Server
from benchmarks.media import Media, make_media
from benchmarks.workloads import WrkWorkload

WORKERS = (1, 2)
CONNECTIONS = 64


def _pin(n_workers: int) -> Pinning:
    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    if taskset is None or len(cores) < 2:
        return Pinning((), (), "not pinned")
    server_cores = cores[:n_workers] if n_workers < len(cores) else cores
    return Pinning((taskset, "-c", ",".join(map(str, server_cores))),
                   (taskset, "-c", str(cores[-1])),
                   f"{n_workers}-worker servers on cores {','.join(map(str, server_cores))}, "
                   f"wrk on core {cores[-1]} (taskset)")


def start_nginx_workers(role: str, media_root: Path, pin: Pinning, workdir: Path,
                        n_workers: int, upstream: str = "", timeout: float = 15) -> Server:
    """nginx from benchmarks/nginx.conf.template with `worker_processes N` and its master
    process on (the master's PID is measured with all its children)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    listen = f"127.0.0.1:{port}"
    text = nginxref.nginx_conf(role, workdir=workdir, media_root=media_root, listen=listen,
                               upstream=upstream, slice_module=nginxref.nginx_has_slice(nginx))
    if "worker_processes 1;" not in text:
        raise BenchError("nginx.conf.template no longer sets worker_processes 1")
    text = text.replace("worker_processes 1;", f"worker_processes {n_workers};", 1)
    if os.geteuid() == 0:
        # with its master on, nginx run as root drops its workers to `nobody`, who cannot read
        # the private temporary media and cache directories; keep them as the user who runs it
        text = "user root;\n" + text
    if n_workers > 1:
        # one listening socket per worker, as edge360's workers each bind the port
        text = text.replace(f"listen {listen}", f"listen {listen} reuseport", 1)
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    stderr_path = workdir / "stderr"
    cmd = [*pin.server, nginx, "-p", str(workdir), "-c", str(conf),
           "-e", str(workdir / "error.log"), "-g", "daemon off;"]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
    server = Server("nginx", role, f"http://{listen}", proc, workdir=workdir,
                    stderr_path=stderr_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            harness.http_get(server.base + "/", timeout=1)
            return server
        except BenchError:
            time.sleep(0.05)
    server.stop(timeout=5)
    raise BenchError(f"nginx {role} ({n_workers} workers) did not start: {server.stderr_tail()}")


def _workloads(media: Media, n: int, edge: bool) -> list[WrkWorkload]:
    q = f"?sid={harness.SID}"
    w = "worker" if n == 1 else "workers"
    out = [
        WrkWorkload(f"origin: master playlist 218 B, {n} {w}", "origin", media.master + q,
                    CONNECTIONS, ("req_per_s", "cpu_us_per_request", "p99_ms"),
                    f"218-byte master playlist; edge360 ({n} {w}) rewrites it for sid "
                    f"{harness.SID}, nginx ({n} {w}) sends the file"),
        WrkWorkload(f"origin: small .ts 218 B, {n} {w}", "origin", media.small + q,
                    CONNECTIONS, ("req_per_s", "cpu_us_per_request", "p99_ms"),
                    f"218-byte segment-like object, {n} {w}"),
    ]
    if edge:
        out.append(WrkWorkload(f"edge: small .ts 218 B, {n} {w}", "edge", media.small + q,
                               CONNECTIONS, ("req_per_s", "cpu_us_per_request", "p99_ms"),
                               f"218-byte object, cache hit at an edge of {n} {w} in front of "
                               f"a 1-worker origin"))
    return out


def _run(server: Server, w: WrkWorkload, round_no: int, duration: float, pin: Pinning,
         done: Path) -> list[dict[str, Any]]:
    workloads.check(server, w)
    r = harness.run_wrk(server.base + w.path, pid=server.pid, connections=w.connections,
                        duration=duration, pin=pin, script=done)
    errors = sum(r.errors.values())
    values = {"req_per_s": r.requests / r.duration_s if r.duration_s else 0.0,
              "cpu_us_per_request": r.server_cpu_s / r.requests * 1e6 if r.requests else None,
              "p99_ms": r.p99_ms}
    common = {"workload": w.name, "server": server.name, "role": w.role, "round": round_no,
              "requests": r.requests, "duration_s": r.duration_s, "errors": r.errors,
              "server_cpu_s": round(r.server_cpu_s, 3)}
    if errors:
        raise BenchError(f"{server.name} {w.name}: wrk counted errors {r.errors}")
    return [{**common, "metric": m, "value": values[m]} for m in w.metrics]


def _edge(origins: dict[str, Server], media: Media, n: int, pin: Pinning,
          logs: Path, tmp: Path, servers: list[Server]) -> tuple[dict[str, Server], str | None]:
    try:
        edge = harness.start_edge360("edge", ["--upstream", origins["edge360"].base,
                                              "--workers", str(n)], pin, logs, timeout=30)
    except BenchError as e:
        return {}, str(e)
    servers.append(edge)
    try:
        status, headers, _ = harness.http_get(edge.base + media.small + f"?sid={harness.SID}")
    except BenchError as e:
        return {}, str(e)
    if status != 200 or "x-cache" not in headers:
        return {}, f"GET {media.small} answered {status}, X-Cache {headers.get('x-cache')}"
    try:
        proxy = start_nginx_workers("edge", media.root, pin, tmp / f"nginx-edge-w{n}", n,
                                    upstream=origins["nginx"].base)
        servers.append(proxy)
        pair = {"edge360": edge, "nginx": proxy}
        for s in pair.values():
            workloads.warm(s, [media.small + f"?sid={harness.SID}"])
    except BenchError as e:
        return {}, str(e)
    return pair, None


def measure(*, quick: bool, command: str, started: str | None = None) -> dict[str, Any]:
    """Both worker counts, every workload, interleaved rounds; a comparison results document."""
    started = started or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed")
    rounds, duration = (1, 1.0) if quick else (3, 5.0)
    load_before = harness.loadavg()
    runs: list[dict[str, Any]] = []
    not_run: list[dict[str, str]] = []
    described: list[dict[str, Any]] = []
    pin_notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge360-workers-") as tmp_name:
        tmp = Path(tmp_name)
        media = make_media(tmp / "media", segment_size=1 << 16, big_size=1 << 16,
                           herd_count=0, herd_size=0, seed=workloads.SEED)
        done = tmp / "done.lua"
        done.write_text(harness.WRK_DONE_LUA)
        logs = tmp / "logs"
        logs.mkdir()
        for n in WORKERS:
            pin = _pin(n)
            pin_notes.append(pin.note)
            servers: list[Server] = []
            logs_n = logs / f"w{n}"
            (logs_n / "up").mkdir(parents=True)
            try:
                origins = {
                    "edge360": harness.start_edge360(
                        "origin", ["--media", str(media.root), "--workers", str(n)],
                        pin, logs_n),
                    "nginx": start_nginx_workers("origin", media.root, pin,
                                                 tmp / f"nginx-origin-w{n}", n),
                }
                servers += origins.values()
                pairs = {"origin": origins}
                # the edges' origins: 1 worker each on core 0, apart from the measured edge
                up_pin = _pin(1)
                up = {"edge360": harness.start_edge360("origin", ["--media", str(media.root)],
                                                       up_pin, logs_n / "up"),
                      "nginx": start_nginx_workers("origin", media.root, up_pin,
                                                   tmp / f"nginx-up-w{n}", 1)}
                servers += up.values()
                edge_pair, why = _edge(up, media, n, pin, logs_n, tmp, servers)
                if edge_pair:
                    pairs["edge"] = edge_pair
                work = _workloads(media, n, edge=why is None)
                if why is not None:
                    not_run.append({"workload": f"edge: small .ts 218 B, {n} workers",
                                    "reason": f"not run: edge not available ({why})"})
                described += [{"name": w.name, "role": w.role, "request": w.request(),
                               "description": w.description} for w in work]
                failed: set[str] = set()
                for round_no in range(1, rounds + 1):
                    for w in work:
                        if w.name in failed:
                            continue
                        for name in results.SERVERS:
                            try:
                                runs += _run(pairs[w.role][name], w, round_no, duration, pin,
                                             done)
                            except BenchError as e:
                                failed.add(w.name)
                                not_run.append({"workload": w.name, "reason": f"failed: {e}"})
                                break
            except BenchError as e:
                not_run.append({"workload": f"{n} workers", "reason": f"not run: {e}"})
            finally:
                for s in reversed(servers):
                    s.stop()
    summary, unpaired = results.summarize(runs)
    notes = [
        "Server CPU = utime+stime of the supervisor (nginx: master) and all its children "
        "(workers) from /proc over each wrk run, divided by the requests wrk completed.",
        "On 2 cores the client (wrk) needs one: 1-worker servers run on core 0, 2-worker "
        "servers on both cores, sharing one with wrk. Requests/s from 1 to 2 workers is "
        "therefore no scaling figure; CPU µs per request is the comparable one.",
        "nginx runs with its master process and worker_processes N (reuseport for N > 1; "
        "`user root` when run as root, so its workers can read the private temp dirs); "
        "edge360 with --workers N (a supervisor and N workers on one port).",
        "Pinning: " + "; ".join(pin_notes),
    ]
    notes += [f"one-sided, not shown as a comparison: {u}" for u in unpaired]
    return {
        "date": started, "command": command, "mode": "quick" if quick else "full",
        "machine": {**harness.machine(nginx), "loadavg_before": load_before,
                    "loadavg_after": harness.loadavg()},
        "pinning": "; ".join(pin_notes),
        "settings": {"rounds": rounds, "duration_s": duration, "connections": CONNECTIONS,
                     "workers": list(WORKERS)},
        "workloads": described, "runs": runs, "summary": summary, "not_run": not_run,
        "notes": notes,
    }
