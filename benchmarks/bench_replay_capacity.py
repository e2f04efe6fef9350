"""How many concurrent virtual viewers one replayer core sustains at real pacing (6 s segments).

A small aiohttp HLS server (uvloop, its own process, pinned to the last core) serves a generated
title of 6 s segments; the replayer (pinned to core 0) runs N looping viewers at speed 1 through
`run_share`, the same code `edge360 replay` runs, for a bounded time. It reports the replayer's CPU
seconds per request, so viewers per core = (1 / CPU per request) × 6 s, and the stall ratio and p99
actually observed at N (a core is "sustained" when it is below 100 % busy with no stalls).

    .venv/bin/python benchmarks/bench_replay_capacity.py [--viewers 3000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import time
from typing import Any

SEGMENT_S = 6.0
SEGMENTS = 20


def _serve(port: int, segment_bytes: int) -> None:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(url: str, viewers: int, seconds: float, ramp: float) -> dict[str, Any]:
    from edge360.replay.model import Viewer
    from edge360.replay.player import PlayerConfig
    from edge360.replay.runner import Share, run_share

    crowd = [Viewer(index=i, start_s=ramp * i / viewers, watch_s=10 * seconds, offset_s=0.0)
             for i in range(viewers)]
    share = Share(viewers=crowd, config=PlayerConfig(master_url=url, speed=1.0, loop=True, seed=1),
                  epoch=time.monotonic(), idle_timeout=30.0, connections=512,
                  deadline=time.monotonic() + seconds)
    marks: list[tuple[float, float, int]] = []

    def tick(stats: Any) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks.append((time.monotonic(), usage.ru_utime + usage.ru_stime, stats.requests))
    stats = await run_share(share, asyncio.Event(), tick)
    steady = [m for m in marks if m[0] >= share.epoch + ramp + SEGMENT_S]
    if len(steady) < 2:
        raise SystemExit("run too short for a steady-state measurement")
    (t0, c0, r0), (t1, c1, r1) = steady[0], steady[-1]
    cpu_per_req = (c1 - c0) / max(r1 - r0, 1)
    return {
        "viewers": viewers, "seconds": seconds, "segment_s": SEGMENT_S,
        "steady_req_per_s": round((r1 - r0) / (t1 - t0), 1),
        "replayer_cpu_busy": round((c1 - c0) / (t1 - t0), 3),
        "cpu_us_per_request": round(cpu_per_req * 1e6, 1),
        "viewers_per_core": int(SEGMENT_S / cpu_per_req) if cpu_per_req else None,
        "requests": stats.requests, "errors": dict(stats.errors),
        "stall_ratio": round(stats.stall_s / stats.played_s, 5) if stats.played_s else None,
        "latency_p99_s": stats.latency.percentile(0.99),
        "startup_p95_s": stats.startup.percentile(0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--segment-bytes", type=int, default=16 * 1024)
    args = parser.parse_args()
    seconds = min(args.seconds, 110.0)            # bounded: the whole run stays under 2 minutes
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.segment_bytes), daemon=True)
    server.start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(_measure(f"http://127.0.0.1:{port}/t/master.m3u8", args.viewers,
                                      seconds, ramp=min(SEGMENT_S * 2, seconds / 4)))
        result["segment_bytes"] = args.segment_bytes
        print(json.dumps(result, indent=2))
    finally:
        if server.pid is not None and server.is_alive():
            os.kill(server.pid, signal.SIGTERM)
        server.join(5)


if __name__ == "__main__":
    main()
