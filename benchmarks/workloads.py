"""How a workload is measured: what is requested (the groups that use it: benchmarks/groups.py),
the check before each run, one run on one server and the figures it gives; and the cold-miss
herd's client.

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

from benchmarks.harness import BenchError, Pinning, Server, WrkResult, http_get, run_wrk
from benchmarks.tlsbench import HandshakeResult, probe, run_handshakes

GB = 1e9
#: the one seed of every random choice (range offsets, media bytes)
SEED = 20240601


@dataclass(frozen=True)
class WrkWorkload:
    """A workload against one URL path: wrk (plus, for ranges, a Lua request generator) or, for
    `client="handshakes"`, full TLS handshakes with openssl s_time (benchmarks/tlsbench.py)."""

    name: str
    role: str  # "origin" | "edge": which kind of server answers it
    path: str  # path and query, exactly as requested
    connections: int
    metrics: tuple[str, ...]
    description: str
    ranges: tuple[int, int] | None = None  # (object size, piece size) for random ranges
    expect_status: int = 200
    #: the server pair that answers it (benchmarks/fleet.py): "origin", "edge/<origin>" or
    #: "https/<origin>"; empty: the role
    pair: str = ""
    #: one request before the check: a 2-second object may have outlived its stale window
    #: between two runs; that request refreshes it, so the run measures the steady state
    refresh_first: bool = False
    client: str = "wrk"  # "wrk" | "handshakes"
    #: the Cache-Control lifetime the origin gives the object, recorded with the request
    lifetime: str = ""

    @property
    def pair_key(self) -> str:
        return self.pair or self.role

    def request(self) -> dict[str, Any]:
        """What was requested, recorded in the results file."""
        out: dict[str, Any] = {"method": "GET", "path": self.path,
                               "connections": self.connections, "client": "wrk -t1"}
        if self.client == "handshakes":
            out["connections"] = f"{self.connections} clients, one new connection per request"
            out["client"] = (f"{self.connections} x openssl s_time -new -tls1_3 -www "
                             f"'{self.path}' (HTTP/1.0, no session reused)")
        if self.pair.startswith("https/"):
            out["tls"] = "TLS 1.3, ECDSA P-256 certificate made with openssl at run time"
        if self.lifetime:
            out["lifetime"] = self.lifetime
        if self.ranges:
            size, piece = self.ranges
            out["range"] = (f"random single range bytes=a-(a+{piece - 1}), a uniform in "
                            f"[0, {size - piece}], Lua math.randomseed({SEED})")
        return out


def metric_values(result: WrkResult) -> dict[str, float]:
    """Every figure one wrk run gives; a workload records the ones it names."""
    cpu = result.server_cpu_s
    return {
        "req_per_s": result.requests / result.duration_s if result.duration_s else 0.0,
        "gb_per_s": result.bytes / GB / result.duration_s if result.duration_s else 0.0,
        # bytes as wrk counted them (headers included: negligible next to MiB bodies)
        "gb_per_cpu_s": result.bytes / GB / cpu if cpu > 0 else 0.0,
        # on loopback the kernel's TCP work for both ends of a connection is charged partly to
        # the sender and partly to the receiver, and which share falls where depends on how
        # each server fills its socket: the pair's CPU is the figure that split cannot move
        "gb_per_pair_cpu_s": result.bytes / GB / (cpu + result.client_cpu_s)
        if cpu + result.client_cpu_s > 0 else 0.0,
        "p99_ms": result.p99_ms,
    }


def handshake_values(result: HandshakeResult) -> dict[str, float | None]:
    """Handshakes per second of wall time, and the server's CPU per handshake (which does not
    depend on the client keeping up)."""
    n = result.handshakes
    return {"handshakes_per_s": n / result.wall_s if result.wall_s else 0.0,
            "cpu_us_per_handshake": result.server_cpu_s / n * 1e6 if n else None}


#: X-Cache values that mean "answered from the cache": HIT; STALE, served while one background
#: refresh runs (both servers); UPDATING, nginx's name for a stale answer while another request's
#: refresh is under way (`proxy_cache_use_stale updating`)
FROM_CACHE = ("HIT", "STALE", "UPDATING")


def check(server: Server, workload: WrkWorkload) -> dict[str, Any]:
    """One request before measuring: the right status, and for an edge, an answer from its cache.
    Returns what was seen; raises BenchError when the server would be measured answering errors
    or misses. For handshakes, also what the TLS client negotiated."""
    headers = {"Range": f"bytes=0-{workload.ranges[1] - 1}"} if workload.ranges else {}
    if workload.refresh_first:
        http_get(server.base + workload.path, cafile=server.cafile)
    status, resp_headers, body = http_get(server.base + workload.path, headers,
                                          cafile=server.cafile)
    if status != workload.expect_status:
        raise BenchError(f"{server.name} {server.role} answered {status} for {workload.path}")
    seen: dict[str, Any] = {"status": status, "body_bytes": len(body),
                            "cache_control": resp_headers.get("cache-control", "")}
    if server.role == "edge":
        seen["x_cache"] = resp_headers.get("x-cache", "")
        # an edge workload measures answers from the cache; a warmed object that still misses
        # would be measured as something it is not (nginx reports $upstream_cache_status in
        # the same header)
        if seen["x_cache"] not in FROM_CACHE:
            raise BenchError(f"{server.name} edge answered X-Cache {seen['x_cache'] or 'absent'} "
                             f"for {workload.path} after warming")
    if workload.client == "handshakes":
        seen["tls"] = probe(server.base.split("://", 1)[1])
    return seen


def warm(server: Server, paths: Sequence[str]) -> None:
    """Fetch each object whole through an edge, twice: the first fills the cache (a miss), the
    second must be served from it; the runs that follow then measure hits."""
    for path in paths:
        for _ in range(2):
            status, _, _ = http_get(server.base + path, timeout=60, cafile=server.cafile)
            if status != 200:
                raise BenchError(f"warming {path} on {server.name} edge: status {status}")


def wait_for_hit(server: Server, path: str, tries: int = 100) -> None:
    """Ask `path` (whole) until the edge answers it from its cache (bounded: `tries` x 0.1 s):
    what an edge stores after answering may take a moment to land."""
    for _ in range(tries):
        status, headers, _ = http_get(server.base + path, timeout=60, cafile=server.cafile)
        if status == 200 and headers.get("x-cache", "") in FROM_CACHE:
            return
        time.sleep(0.1)
    raise BenchError(f"{path} on {server.name} edge: not answered from its cache in time")


def run_one(server: Server, workload: WrkWorkload, *, round_no: int, duration: float,
            pin: Pinning, scripts: dict[str, Path]) -> list[dict[str, Any]]:
    """Measure one server on one workload once; one run record per metric."""
    seen = check(server, workload)
    common: dict[str, Any] = {
        "workload": workload.name, "server": server.name, "role": server.role,
        "pair": workload.pair_key, "round": round_no, "check": seen,
    }
    if workload.client == "handshakes":
        shake = run_handshakes(server.base.split("://", 1)[1], workload.path, pid=server.pid,
                               clients=workload.connections, duration=duration, pin=pin)
        common.update({"handshakes": shake.handshakes, "duration_s": round(shake.wall_s, 3),
                       "server_cpu_s": round(shake.server_cpu_s, 3),
                       "client_cpu_s": round(shake.client_cpu_s, 3),
                       "bytes_per_connection": shake.bytes_per_connection})
        hvalues = handshake_values(shake)
        return [{**common, "metric": m, "value": hvalues[m]} for m in workload.metrics]
    if workload.ranges:
        size, piece = workload.ranges
        result = run_wrk(server.base + workload.path, pid=server.pid,
                         connections=workload.connections, duration=duration, pin=pin,
                         script=scripts["ranges"],
                         script_args=[workload.path, str(size), str(piece), str(SEED)])
    else:
        result = run_wrk(server.base + workload.path, pid=server.pid,
                         connections=workload.connections, duration=duration, pin=pin,
                         script=scripts["done"])
    if result.requests == 0 or result.errors["status"] > result.requests // 100:
        # more than 1 % of answers outside 2xx/3xx: that server would be measured failing
        raise BenchError(f"{server.name} answered {result.requests} requests of "
                         f"{workload.name} with wrk errors {result.errors}")
    values = metric_values(result)
    common.update({
        "requests": result.requests, "bytes": result.bytes,
        "duration_s": round(result.duration_s, 3), "server_cpu_s": round(result.server_cpu_s, 3),
        "client_cpu_s": round(result.client_cpu_s, 3), "errors": result.errors,
        "p50_ms": result.p50_ms,
    })
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

