"""Peak memory of an edge fetching cold big objects: an origin and an edge as real processes, one
or more clients reading an object through the edge once (bytes checked by sha256), and the
edge's peak resident set (VmHWM) plus what its cgroup charged, when the kernel says.

    .venv/bin/python benchmarks/memory_probe.py --media DIR --path /t/v/huge.ts \\
        [--memory 64MiB] [--cache-dir DIR] [--clients N]

Prints "<peak MiB> <object MiB> <clients>" on stdout; exit 1 when a body was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import threading
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures.servers import start_process


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def read_through(url: str) -> str:
    digest = hashlib.sha256()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
        if r.status != 200:
            raise SystemExit(f"{url}: HTTP {r.status}")
        async for chunk in r.content.iter_chunked(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--media", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--memory", default="64MiB")
    p.add_argument("--cache-dir", default="")
    p.add_argument("--clients", type=int, default=1)
    args = p.parse_args()
    source = Path(args.media) / args.path.lstrip("/")
    want = hashlib.sha256()
    with open(source, "rb") as fh:
        while chunk := fh.read(1 << 20):
            want.update(chunk)
    origin = start_process(["serve", "--port", "0", "--media", args.media])
    env = {"EDGE360_EDGE_CACHE_MEMORY_BYTES": args.memory}
    extra = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    edge = start_process(["serve", "--role", "edge", "--port", "0", "--upstream", origin.base,
                          *extra], env)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:  # VmHWM is the peak already; sampled so a crash still reports
        while not done.wait(0.1):
            peak[0] = max(peak[0], peak_rss_mib(edge.proc.pid))
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        started = time.monotonic()
        got = asyncio.run(_all(edge.base + args.path, args.clients))
        seconds = time.monotonic() - started
        peak[0] = max(peak[0], peak_rss_mib(edge.proc.pid))
    finally:
        done.set()
        edge.stop()
        origin.stop()
    size_mib = source.stat().st_size / (1 << 20)
    print(f"{peak[0]:.1f} {size_mib:.1f} {args.clients} {seconds:.2f}")
    return 0 if all(g == want.hexdigest() for g in got) else 1


async def _all(url: str, clients: int) -> list[str]:
    return list(await asyncio.gather(*(read_through(url) for _ in range(clients))))


if __name__ == "__main__":
    sys.exit(main())
