"""Node-wide counters across a worker's death, with real processes: an edge with --workers 2 in
front of an origin serves viewers, one worker is SIGKILLed and restarted by its supervisor, and
no counter of /metrics ever goes back, while requests and egress still match exactly what the
clients received."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp

from tests.fixtures.procs import running, wait_workers
from tests.fixtures.servers import start_process

#: a counter sample of the exposition: name{labels} value
SAMPLE = re.compile(r"^(edge360_\w+?(?:_total|_bucket|_count|_sum))(\{[^}]*\})? (\S+)$")
KIND = re.compile(r'kind="(playlist|segment)"')


def counters(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def served(samples: dict[str, float]) -> tuple[float, float]:
    """(content requests answered, egress bytes) as the node counts them."""
    requests = sum(v for k, v in samples.items()
                   if k.startswith("edge360_requests_total") and KIND.search(k))
    egress = sum(v for k, v in samples.items() if k.startswith("edge360_egress_bytes_total"))
    return requests, egress


class Scraper:
    """Scrapes /metrics and checks every counter sample against the highest value seen."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.seen: dict[str, float] = {}
        self.scrapes = 0

    async def scrape(self) -> dict[str, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
                s.get(self.base + "/metrics") as r:
            assert r.status == 200
            samples = counters(await r.text())
        for key, value in self.seen.items():
            assert samples.get(key, 0.0) >= value, f"{key} went back from {value}"
        self.seen.update(samples)
        self.scrapes += 1
        return samples

    async def until(self, requests: int, egress: int) -> None:
        got = (-1.0, -1.0)
        for _ in range(100):  # bounded: the workers report within a second
            got = served(await self.scrape())
            if got == (requests, egress):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"node counts {got}, clients got {(requests, egress)}")


async def watch(base: str, sid: str) -> tuple[int, int]:
    """One viewer: the media playlist and three segments, each on a new connection (so they
    spread over the workers). (requests, body bytes) received."""
    n = size = 0
    for path in ("v0/index.m3u8", "v0/seg_000.ts", "v0/seg_001.ts", "v0/seg_002.ts"):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         auto_decompress=False) as s, \
                s.get(f"{base}/tiny/{path}?sid={sid}",
                      headers={"Accept-Encoding": "identity"}) as r:
            assert r.status == 200
            size += len(await r.read())
            n += 1
    return n, size


async def test_node_counters_never_go_back_when_a_worker_dies(tiny_media: Path) -> None:
    origin = start_process(["serve", "--port", "0", "--media", str(tiny_media)])
    edge = start_process(["serve", "--role", "edge", "--port", "0", "--workers", "2",
                          "--upstream", origin.base])
    requests = egress = 0
    try:
        scraper = Scraper(edge.base)
        for result in await asyncio.gather(*(watch(edge.base, f"first-{i:04d}")
                                             for i in range(16))):
            requests, egress = requests + result[0], egress + result[1]
        await scraper.until(requests, egress)

        workers = wait_workers(edge.proc.pid, 2)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        for _ in range(100):  # bounded: scrape on while the supervisor notices and restarts
            await scraper.scrape()
            if not running(victim):
                break
            await asyncio.sleep(0.05)
        wait_workers(edge.proc.pid, 2, other_than=frozenset({victim}))
        assert served(await scraper.scrape()) == (requests, egress)  # nothing lost, nothing back

        for result in await asyncio.gather(*(watch(edge.base, f"after-{i:04d}")
                                             for i in range(15))):
            requests, egress = requests + result[0], egress + result[1]
        await scraper.until(requests, egress)
        assert requests == 16 * 4 + 60
    finally:
        code = edge.stop()
        origin.stop()
    assert code == 0
    assert "exited with -9; starting it again" in edge.stderr
    assert "Traceback" not in edge.stderr
