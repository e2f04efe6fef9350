"""The workloads: what is requested, from which server pair, and which figures come out of it.

Each workload is measured on an edge360 server and its nginx reference in the same run,
interleaved round by round (edge360, nginx, edge360, nginx, ...) so slow drift of the machine
(thermal, page cache, noisy neighbours) falls on both alike; the summary takes medians.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    SID,
    BenchError,
    Media,
    Pinning,
    Server,
    WrkResult,
    http_get,
    run_wrk,
)

GB = 1e9
#: the one seed of every random choice (range offsets, media bytes)
SEED = 20240601


@dataclass(frozen=True)
class WrkWorkload:
    """A wrk workload against one URL path (plus, for ranges, a Lua request generator)."""

    name: str
    role: str  # "origin" | "edge": which server pair answers it
    path: str  # path and query, exactly as requested
    connections: int
    metrics: tuple[str, ...]
    description: str
    ranges: tuple[int, int] | None = None  # (object size, piece size) for random ranges
    expect_status: int = 200
    #: each connection's first request goes through aiohttp at edge360 (WRK_FIRST_HANDED_LUA)
    first_handed: bool = False

    def request(self) -> dict[str, Any]:
        """What was requested, recorded in the results file."""
        threads = self.connections if self.first_handed else 1
        out: dict[str, Any] = {"method": "GET", "path": self.path,
                               "connections": self.connections, "client": f"wrk -t{threads}"}
        if self.first_handed:
            out["first_request"] = "Cache-Control: max-age=3600 (then plain GETs)"
        if self.ranges:
            size, piece = self.ranges
            out["range"] = (f"random single range bytes=a-(a+{piece - 1}), a uniform in "
                            f"[0, {size - piece}], Lua math.randomseed({SEED})")
        return out


def wrk_workloads(media: Media, *, quick: bool, edge: bool,
                  big_connections: int) -> list[WrkWorkload]:
    """The wrk workloads of this run, origin first, then (when the edge works) the edge."""
    q = f"?sid={SID}"
    roles = ["origin", "edge"] if edge else ["origin"]
    out: list[WrkWorkload] = []
    for role in roles:
        hit = " (cache hit)" if role == "edge" else ""
        out += [
            WrkWorkload(f"{role}: master playlist 218 B", role, media.master + q, 64,
                        ("req_per_s", "p99_ms"),
                        f"218-byte master playlist{hit}; edge360 rewrites it for sid "
                        f"{SID} (sent private), nginx sends the file as is"),
            WrkWorkload(f"{role}: small .ts 218 B", role, media.small + q, 64,
                        ("req_per_s", "p99_ms"),
                        f"218-byte segment-like object{hit}, not rewritten by either"),
        ]
        if role == "edge":
            out.append(WrkWorkload(
                "edge: small .ts after a handed-over request", role, media.small + q, 32,
                ("req_per_s", "p99_ms"),
                "as small .ts, but each of 32 connections (one wrk thread each) first asks "
                "with Cache-Control: max-age=3600, which edge360's fast path hands to aiohttp "
                "(nginx ignores it): measures the connection coming back to the fast path",
                first_handed=True))
        if quick:
            continue
        out += [
            WrkWorkload(f"{role}: 8 MiB segment", role, media.segment + q, big_connections,
                        ("gb_per_cpu_s", "gb_per_s", "p99_ms"),
                        f"whole {media.segment_size}-byte .ts{hit}"),
            WrkWorkload(f"{role}: 1 MiB ranges of 64 MiB", role, media.big + q, 64,
                        ("gb_per_cpu_s", "gb_per_s", "p99_ms"),
                        f"random 1 MiB ranges of a {media.big_size}-byte .ts{hit}",
                        ranges=(media.big_size, 1 << 20), expect_status=206),
        ]
    return out


def metric_values(result: WrkResult) -> dict[str, float]:
    """Every figure one wrk run gives; a workload records the ones it names."""
    cpu = result.server_cpu_s
    return {
        "req_per_s": result.requests / result.duration_s if result.duration_s else 0.0,
        "gb_per_s": result.bytes / GB / result.duration_s if result.duration_s else 0.0,
        # bytes as wrk counted them (headers included: negligible next to MiB bodies)
        "gb_per_cpu_s": result.bytes / GB / cpu if cpu > 0 else 0.0,
        "p99_ms": result.p99_ms,
    }


def check(server: Server, workload: WrkWorkload) -> dict[str, Any]:
    """One request before measuring: the right status, and for an edge, a cache hit. Returns
    what was seen; raises BenchError when the server would be measured answering errors."""
    headers = {"Range": "bytes=0-1048575"} if workload.ranges else {}
    status, resp_headers, body = http_get(server.base + workload.path, headers)
    if status != workload.expect_status:
        raise BenchError(f"{server.name} {server.role} answered {status} for {workload.path}")
    seen: dict[str, Any] = {"status": status, "body_bytes": len(body)}
    if server.role == "edge":
        seen["x_cache"] = resp_headers.get("x-cache", "")
        # an edge workload measures answers from the cache; a warmed object that still misses
        # would be measured as something it is not (nginx reports $upstream_cache_status in
        # the same header). STALE counts: it is served from the cache while one background
        # refresh runs, which is what a master playlist with max-age=30 gets in a long run
        if seen["x_cache"] not in ("HIT", "STALE"):
            raise BenchError(f"{server.name} edge answered X-Cache {seen['x_cache'] or 'absent'} "
                             f"for {workload.path} after warming")
    return seen


def warm(server: Server, paths: Sequence[str]) -> None:
    """Fetch each object whole through an edge, twice: the first fills the cache (a miss), the
    second must be served from it; the runs that follow then measure hits."""
    for path in paths:
        for _ in range(2):
            status, _, _ = http_get(server.base + path, timeout=60)
            if status != 200:
                raise BenchError(f"warming {path} on {server.name} edge: status {status}")


def run_one(server: Server, workload: WrkWorkload, *, round_no: int, duration: float,
            pin: Pinning, scripts: dict[str, Path]) -> list[dict[str, Any]]:
    """Measure one server on one workload once; one run record per metric."""
    seen = check(server, workload)
    if workload.ranges:
        size, piece = workload.ranges
        result = run_wrk(server.base + workload.path, pid=server.pid,
                         connections=workload.connections, duration=duration, pin=pin,
                         script=scripts["ranges"],
                         script_args=[workload.path, str(size), str(piece), str(SEED)])
    elif workload.first_handed:
        result = run_wrk(server.base + workload.path, pid=server.pid,
                         connections=workload.connections, duration=duration, pin=pin,
                         script=scripts["first_handed"], threads=workload.connections)
    else:
        result = run_wrk(server.base + workload.path, pid=server.pid,
                         connections=workload.connections, duration=duration, pin=pin,
                         script=scripts["done"])
    values = metric_values(result)
    common = {
        "workload": workload.name, "server": server.name, "role": server.role,
        "round": round_no, "requests": result.requests, "bytes": result.bytes,
        "duration_s": round(result.duration_s, 3), "server_cpu_s": round(result.server_cpu_s, 3),
        "errors": result.errors, "p50_ms": result.p50_ms, "check": seen,
    }
    return [{**common, "metric": m, "value": values[m]} for m in workload.metrics]


# ---------------------------------------------------------------------------------------------
# cold-miss herd


async def herd(url: str, waiters: int, limit_s: float, sid_prefix: str) -> dict[str, Any]:
    """`waiters` concurrent GETs of one uncached object, each on its own connection; per request
    the time from sending to its first body byte and to its last. Bounded by `limit_s`."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    ttfb: list[float] = []
    total: list[float] = []
    statuses: dict[str, int] = {}
    start_gate = asyncio.Event()

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        await start_gate.wait()
        t0 = time.perf_counter()
        try:
            # a distinct valid sid per waiter: a herd is many viewers, as on a release
            async with session.get(f"{url}?sid={sid_prefix}{i:06d}") as resp:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                size = len(first)
                while chunk := await resp.content.readany():
                    size += len(chunk)
                key = str(resp.status)
                if first:
                    ttfb.append(t1 - t0)
                    total.append(time.perf_counter() - t0)
        except (aiohttp.ClientError, TimeoutError) as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1

    client_timeout = aiohttp.ClientTimeout(total=limit_s)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        tasks = [asyncio.ensure_future(one(i, session)) for i in range(waiters)]
        await asyncio.sleep(0)  # every task is parked on the gate before any request goes out
        t_start = time.perf_counter()
        start_gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), limit_s + 10)
        wall = time.perf_counter() - t_start

    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"waiters": waiters, "statuses": statuses, "completed": len(ttfb),
            "ttfb_p50_ms": pct(ttfb, 0.50), "ttfb_p99_ms": pct(ttfb, 0.99),
            "ttfb_max_ms": max(ttfb) * 1000 if ttfb else None,
            "last_byte_p99_ms": pct(total, 0.99), "wall_s": wall}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))

