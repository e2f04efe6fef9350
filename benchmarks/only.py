"""The edge360-only groups of `python -m benchmarks.run --only GROUP[,GROUP]`: figures the issues
ask for that have no nginx counterpart. Each group runs its benchmark script in a child process
(a fresh interpreter: tracemalloc and CPU figures see nothing of this one), reads the JSON the
script writes and turns it into one results document `benchmarks/results/<date>-<group>.json`,
rendered into RESULTS.md's "edge360-only figures" section (`results.render_results`).

- sessions: benchmarks/bench_sessions.py (memory per session, touches/s, touches/s through the
  request path on real URLs) and benchmarks/bench_rewrite.py (two-hour playlist per viewer)
- replay: benchmarks/bench_replay_capacity.py (viewers one replayer core sustains, ramped)
- headline: benchmarks/bench_headline.py (the peak window of the first day replayed against one
  edge node at speed 1, each viewer on its own connection, ramped until the first error, >1 %
  server-vs-truth disagreement or >1 % stalls)
- sendpath: benchmarks/bench_sendpath.py (sender CPU per byte of an 8 MiB memory-held body:
  written from bytes or from a page-aligned mapping, or sent with sendfile from a memfd or a file)
- workers: benchmarks/bench_workers.py (server CPU per request, 1 and 2 workers, with nginx
  worker_processes 1 and 2 as the reference: a comparison document, not an edge360-only one)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness, results
from benchmarks.bench_headline import DEFAULT_STEP_S, MAX_STEP_S
from benchmarks.results import figure

GROUPS = ("sessions", "replay", "headline", "workers", "sendpath")


def _script(module: str, args: list[str], timeout: float) -> dict[str, Any]:
    """`python -m benchmarks.<module> ARGS --json OUT` in the repository; its JSON."""
    with tempfile.TemporaryDirectory(prefix="edge360-only-") as tmp:
        out = Path(tmp) / "out.json"
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args,
                               "--json", str(out)], cwd=harness.REPO, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise harness.BenchError(f"{module} failed (exit {proc.returncode}): "
                                     f"{proc.stderr.strip()[-400:]}")
        data: dict[str, Any] = json.loads(out.read_text())
        return data


def _machine() -> dict[str, Any]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    return harness.machine(nginx)


def sessions(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    flag = ["--quick"] if quick else []
    s = _script("bench_sessions", flag, timeout=900)
    r = _script("bench_rewrite", flag, timeout=600)
    g = "sessions"
    figs = [
        figure(g, "memory per active session, 60,000 sessions", s["bytes_per_session_60k"],
               "bytes", "<= 300", "tracemalloc growth of the whole SessionTracker (keys "
               "included) / sessions, each session touched twice"),
        figure(g, f"memory per active session, {s['sessions_large']:,} sessions",
               s["bytes_per_session_1m"], "bytes", "<= 300"),
        figure(g, "touches/s, existing sessions (one core)", s["touches_per_s_existing"],
               "touches/s", ">= 1,000,000", f"{s['touches_existing']:,} touches over 60,000 "
               f"sessions, one thread; a bare dict store of the same keys ran "
               f"{s['bare_dict_stores_per_s']:,}/s"),
        figure(g, "touches/s, new sessions (one core)", s["touches_per_s_new"], "touches/s", "",
               "each the first segment of a viewer: a view, with the expiry check"),
        figure(g, "sessions ended/s through the play-out calendar (one core)",
               s["sessions_ended_per_s_tail"], "sessions/s", "",
               "60,000 sessions that each fetched a 120 s title in one burst, ended by one "
               "expiry call"),
        figure(g, "touches/s through the request path, real URLs (one core)",
               s["request_path_touches_per_s"], "touches/s", "",
               "in process, no network: parse the request target as aiohttp does (yarl), "
               "split_request_path, valid_sid, sessions.identity, tracker.touch; "
               f"{s['request_path_urls']:,} distinct segment/playlist URLs with ?sid= and "
               "token"),
        figure(g, f"rewrite of a two-hour playlist ({r['entries']:,} entries) per viewer",
               r["us_per_render"], "µs per render", "",
               f"CompiledPlaylist.render; {r['playlist_bytes']:,}-byte playlist; "
               f"the line-by-line reference takes {r['reference_us_per_render']} µs"),
        figure(g, f"renders/s of a two-hour playlist ({r['entries']:,} entries)",
               r["renders_per_s"], "renders/s"),
    ]
    settings = {"quick": quick, "python": s["python"]}
    notes = ["Single-threaded loops in a fresh interpreter, not pinned; timings are "
             "time.perf_counter over the whole loop."]
    return figs, {"sessions": s, "rewrite": r, "settings": settings}, notes


def replay(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    steps = "300,600" if quick else "3000,10000,20000,40000,60000"
    seconds = "20" if quick else "90"
    # a shared pool of 512, as this figure has always been measured: one process cannot hold
    # 60,000 connections of its own (the headline measures the per-viewer connections)
    data = _script("bench_replay_capacity", ["--steps", steps, "--seconds", seconds,
                                             "--connections", "512"],
                   timeout=60 + 130 * len(steps.split(",")))
    g = "replay"
    figs = []
    for st in data["steps"]:
        n = f"{st['viewers']:,} viewers"
        state = "clean" if st["clean"] else f"not clean: {st['why_not_clean']}"
        figs += [
            figure(g, f"{n}: replayer CPU", round(st["replayer_cpu_busy"] * 100, 1),
                   "% of one core", "", f"{st['steady_req_per_s']} req/s steady over "
                   f"{st['steady_s']} s; nginx {round((st['server_cpu_busy'] or 0) * 100, 1)} "
                   f"% of its core; p99 {round(st['latency_p99_s'] * 1000, 1)} ms; {state}"),
            figure(g, f"{n}: replayer CPU per request", st["cpu_us_per_request"],
                   "µs CPU per request"),
            figure(g, f"{n}: errors", st["error_count"], "errors"),
            figure(g, f"{n}: stall ratio", st["stall_ratio"], "stalled s / played s"),
        ]
    figs.append(figure(g, "largest clean viewer count, one replayer core",
                       data["largest_clean"], "viewers", "",
                       f"6 s segments, speed 1; stopped by: {data['stopped_by']}"))
    notes = [f"{data['pinning']}; {data['segment_bytes']}-byte segments; steps of "
             f"{data['step_seconds']} s; connections: {data.get('connections', 512)}; clean = "
             "no errors, no stalls, replayer core < 95 % busy."]
    return figs, data, notes


def sendpath(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    data = _script("bench_sendpath", ["--quick"] if quick else [], timeout=600)
    g = "sendpath"
    figs = [figure(g, f"8 MiB body, {way}", value, "GB per sender CPU-second", "",
                   "median over rounds" + (" (the best here)" if way == data["best"] else ""))
            for way, value in data["gb_per_cpu_s"].items()]
    notes = [f"{data['pinning']}; {data['rounds']} interleaved rounds of "
             f"{data['bodies_per_round']} bodies per way over loopback TCP; kernel "
             f"{data['kernel']}."]
    return figs, data, notes


def _when(st: dict[str, Any]) -> str:
    """While the viewers joined or after, and how busy both sides were while they joined."""
    if st.get("edge_cpu_busy_joining") is None:
        return ""
    out = (f"; while the viewers joined: edge {st['edge_cpu_busy_joining']:.0%}, replayer "
           f"{st['replayer_cpu_busy_joining']:.0%} of a core")
    if st.get("errors"):
        out += (f"; {st.get('errors_while_joining')} errors while joining (first at "
                f"{st.get('first_error_s')} s), {st.get('errors_after_joining')} after")
    tcp = {k: v for k, v in (st.get("tcp_counters") or {}).items() if v}
    if tcp:
        out += f"; kernel TCP counters during the step: {tcp}"
    return out


def headline_figures(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The headline ramp's figures: per step the counts side by side, the difference, errors,
    p99, both sides' CPU, the edge's memory and descriptors; then the per-core capacities."""
    g = "headline"
    figs = []
    for st in data["steps"]:
        n = f"{st['viewers']:,} viewers"
        state = "clean" if st["clean"] else f"not clean: {st['why_not_clean']}"
        figs += [
            figure(g, f"{n}: server peak vs replayer truth", st["server_vs_truth_pct"], "%",
                   "within 1 %", f"target {st['target_peak']}, truth {st['achieved_peak']}, "
                   f"server {st['server_peak']} (scale {st['scale']}, window {st['window']} h, "
                   f"speed 1); {st['requests']:,} requests; {state}"),
            figure(g, f"{n}: errors", st["errors"], "errors", "0",
                   str(st.get("errors_by_detail") or st["errors_by_kind"] or "") + _when(st)),
            figure(g, f"{n}: p99 latency", round((st["latency_p99_s"] or 0) * 1000, 1), "ms",
                   "", f"stall ratio {st['stall_ratio']}"),
            figure(g, f"{n}: steady requests/s", st.get("steady_req_per_s"), "requests/s", "",
                   f"{st['expected_req_per_s']} expected at 6 s pacing"),
            figure(g, f"{n}: edge CPU", round((st.get("edge_cpu_busy") or 0) * 100, 1),
                   "% of one core", "", f"{st.get('edge_cpu_us_per_request')} µs per request"),
            figure(g, f"{n}: edge RSS", round(st["edge_rss_max_bytes"] / 2**20, 1), "MiB", "",
                   f"descriptors: edge {st['edge_fds_max']}, replayer {st['replayer_fds_max']} "
                   f"(limit 20,000 each)"),
            figure(g, f"{n}: replayer CPU", round((st.get("replayer_cpu_busy") or 0) * 100, 1),
                   "% of one core", "",
                   f"{st.get('replayer_cpu_us_per_request')} µs per request; RSS "
                   f"{st['replayer_rss_max_bytes'] / 2**20:.0f} MiB"),
        ]
        if st.get("edge_bytes_per_connection") is not None:
            figs += [
                figure(g, f"{n}: concurrent TCP connections at the edge",
                       st["edge_connections_max"], "connections", ">= viewers",
                       f"one per viewer; edge workers {st.get('edge_workers')}, replayer "
                       f"workers {st.get('replayer_workers')}, source addresses "
                       f"{st.get('source_addresses')}"),
                figure(g, f"{n}: edge memory per connection", st["edge_bytes_per_connection"],
                       "bytes", "", "growth of the edge node's RSS per connection while "
                       "the viewers joined (their sessions included)"),
                figure(g, f"{n}: replayer memory per connection",
                       st["replayer_bytes_per_connection"], "bytes", "",
                       "growth of the replayer's RSS per connection while the viewers "
                       "joined (one virtual player each)"),
            ]
    shared = str(data.get("pinning", "")).startswith("not pinned")
    figs.append(figure(g, "largest clean step, " + ("edge and replayer sharing every core"
                                                    if shared else
                                                    "one edge core + one replayer core"),
                       data["largest_clean"], "viewers", "60,000",
                       f"stopped by: {data['stopped_by']}"))
    steady = [st for st in data["steps"] if st.get("edge_cpu_us_per_request")]
    if steady:
        busiest = max(steady, key=lambda st: st["steady_req_per_s"])
        figs += [
            figure(g, "edge capacity per core at 6 s pacing", int(6e6 / busiest[
                "edge_cpu_us_per_request"]), "viewers per core", "",
                f"6 s / {busiest['edge_cpu_us_per_request']} µs CPU per request at "
                f"{busiest['viewers']:,} viewers (= {int(1e6 / busiest['edge_cpu_us_per_request'])}"
                " req/s per core x 6)"),
            figure(g, "replayer capacity per core at 6 s pacing", int(6e6 / busiest[
                "replayer_cpu_us_per_request"]), "viewers per core", "",
                f"6 s / {busiest['replayer_cpu_us_per_request']} µs CPU per request at "
                f"{busiest['viewers']:,} viewers"),
        ]
    settings = ", ".join(f"{k} = {v}" for k, v in data.get("settings", {}).items())
    notes = [f"{data['pinning']}; one origin + one edge node ({settings or 'fast path on'}); "
             f"{len(data['renditions'])} renditions of {data['segments']} x 6 s "
             f"{data['segment_bytes']}-byte segments, --loop; `edge360 replay --window "
             f"{data['window']} --speed 1` with connections: {data['connections']} "
             f"(the viewers already watching join over {data.get('ramp_s', 60):g} s) "
             f"(workers and source addresses per step) for {data['step_seconds']:g} s per "
             f"step, scale = viewers / 60,000; a fresh, warmed edge per step; clean = no "
             f"errors, server vs truth within 1 %, stall ratio <= 1 %; CPU from /proc over the "
             f"steady part."]
    return figs, notes


#: the headline ramp's steps (viewers); `benchmarks.run --headline-steps` replaces them
HEADLINE_STEPS = "20000,40000,50000,60000,80000"
#: seconds per headline step in a --quick smoke run, and its join (a third of it at most)
QUICK_STEP_S = 30.0
QUICK_RAMP_S = 10.0


def headline(quick: bool, steps: str = HEADLINE_STEPS, extra: Sequence[str] = ()
             ) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """`extra`: more bench_headline flags (--ramp, --shared-cores; a --seconds here wins)."""
    # the ramp stops after its first step that is not clean, so the long tail costs nothing
    # once the limit is found
    steps = "300,600" if quick else steps
    seconds = QUICK_STEP_S if quick else DEFAULT_STEP_S
    # the step's own join first, so a --ramp in `extra` wins
    join = ["--ramp", f"{QUICK_RAMP_S:g}"] if quick else []
    # per step: the longest run allowed (an --seconds in `extra` may ask for it) and set-up
    per_step = 120 if quick else MAX_STEP_S + 300
    data = _script("bench_headline",
                   ["--steps", steps, "--seconds", f"{seconds:g}", *join, *extra],
                   timeout=120 + per_step * len(steps.split(",")))
    figs, notes = headline_figures(data)
    return figs, data, notes


def run_group(group: str, quick: bool, command: str,
              headline_steps: str = HEADLINE_STEPS, headline_extra: Sequence[str] = ()
              ) -> dict[str, Any]:
    """Measure one group; its results document (edge360-only, or a comparison for workers)."""
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load_before = harness.loadavg()
    if group == "workers":
        from benchmarks import bench_workers
        doc = bench_workers.measure(quick=quick, command=command, started=started)
        doc["group"] = group
        return doc
    if group == "headline":
        figs, raw, notes = headline(quick, headline_steps, headline_extra)
    else:
        figs, raw, notes = {"sessions": sessions, "replay": replay,
                            "sendpath": sendpath}[group](quick)
    machine = {**_machine(), "loadavg_before": load_before, "loadavg_after": harness.loadavg()}
    return results.edge360_only_doc(group, date=started, command=command, machine=machine,
                                    figures=figs, settings={"quick": quick}, notes=notes,
                                    raw=raw)
