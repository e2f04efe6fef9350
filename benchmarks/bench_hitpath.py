"""CPU cost of one request on the content plane, in process: a Connection fed requests through a
fake transport (no sockets, no kernel), so the figure is the Python work per request alone and
can be compared run to run on a busy machine (process CPU time, not wall time).

    .venv/bin/python -m benchmarks.bench_hitpath [--requests N] [--profile] [--role edge|origin]

The edge case: a 218-byte .ts stored in the memory tier, asked with ?sid= as a viewer would
after its media playlist (so the node knows the segment); the origin case: the same object in a
title on disk (held in memory by the catalog). This is not a comparison with nginx
(benchmarks.run is): it is the loop to find where a hit's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fixtures.servers import make_config, running_node
from tests.fixtures.titles import publish

from edge360.http.guard import ConnectionGuard
from edge360.http.outbox import Outbox
from edge360.http.protocol import Connection
from edge360.run.app import App

BODY = b"\x47" * 218
#: requests per timed block
BLOCK = 1000
#: what Chromium 120 sends beside Host with an hls.js segment fetch from a page on another origin
BROWSER = "".join(f"{k}: {v}\r\n" for k, v in (
    ("Connection", "keep-alive"),
    ("sec-ch-ua", '"Chromium";v="120", "Not?A_Brand";v="8"'),
    ("Origin", "https://player.example.com"),
    ("sec-ch-ua-mobile", "?0"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/120.0.0.0 Safari/537.36"),
    ("sec-ch-ua-platform", '"Linux"'),
    ("Accept", "*/*"),
    ("Sec-Fetch-Site", "cross-site"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Dest", "empty"),
    ("Referer", "https://player.example.com/"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-US,en;q=0.9"),
))


class FakeTransport:
    """Enough of asyncio.Transport for a Connection that answers at once."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Live:
    draining = False

    def add(self, conn: Connection) -> None:
        pass

    def discard(self, conn: Connection) -> None:
        pass


def title(root: Path) -> None:
    v = root / "bench" / "v"
    v.mkdir(parents=True)
    (v / "small.ts").write_bytes(BODY)
    (v / "index.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n"
                                  "#EXTINF:6.0,\nsmall.ts\n#EXT-X-ENDLIST\n")
    (root / "bench" / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv/index.m3u8\n")
    publish(root)


async def measure(role: str, requests: int, profile: bool, path: str, extra: str) -> float:
    tmp = Path(tempfile.mkdtemp())
    title(tmp)
    origin = App(make_config({"origin.media": str(tmp)}))
    await origin.start()
    app = origin
    if role == "edge":
        node_cm = running_node(make_config({"origin.media": str(tmp)}))
        base, _ = await node_cm.__aenter__()
        app = App(make_config({"server.role": "edge", "edge.upstreams": [base],
                               "edge.health_interval": 60}))
        await app.start()
    dispatcher = app.dispatcher
    assert dispatcher is not None
    conn = Connection(dispatcher, ConnectionGuard(app.node.config, app.node.counters), Live(),
                      Outbox(asyncio.get_running_loop()))
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    # the media playlist first, as a player does: the node then knows the segment (its
    # rendition, its duration for the session, the segment after it for prefetch)
    conn.data_received(b"GET /bench/v/index.m3u8?sid=benchmark01 HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if transport.written:
            break
    transport.written = 0
    request = f"GET {path}?sid=benchmark01 HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    conn.data_received(request)  # a miss on the edge: fetched and stored
    for _ in range(200):
        await asyncio.sleep(0.01)
        if transport.written:
            break
    conn.data_received(request)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    # blocks of 1,000 requests; the quickest block is the figure: other work on the machine
    # only ever adds time, so the minimum is the steadiest estimate of the path's own cost
    best = float("inf")
    for _ in range(max(1, requests // BLOCK)):
        started = time.process_time()
        for _ in range(BLOCK):
            conn.data_received(request)
        best = min(best, time.process_time() - started)
        await asyncio.sleep(0.001)  # the once-a-second work (a file's recheck) may need the loop
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(80)
    await app.close()
    return best / BLOCK * 1e6


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_hitpath")
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--role", choices=("edge", "origin"), default="edge")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--browser", action="store_true",
                   help="send the 13 further header fields Chromium sends with an hls.js fetch")
    p.add_argument("--path", default="/bench/v/small.ts",
                   help="what is asked: /bench/v/small.ts (default), /bench/master.m3u8 or "
                        "/bench/v/index.m3u8")
    args = p.parse_args()
    us = asyncio.run(measure(args.role, args.requests, args.profile, args.path,
                                BROWSER if args.browser else ""))
    print(f"{args.role}: {us:.2f} us of CPU per request (Python work only; quickest block of "
          f"{BLOCK})")


if __name__ == "__main__":
    main()
