"""The disk tier is an optimisation, never a point of failure: with --cache-dir on a 20 MB
filesystem (a real tmpfs, mounted in a mount namespace of the edge's own) every answer is whole
and correct, failed writes are counted and logged in a line, never a traceback; and a disk that
fails with EIO (a fault-injecting disk tier) leaves every answer intact as well."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from edge360.cache.disk import DiskCache
from tests.fixtures.edges import metric
from tests.fixtures.servers import READY_RE, REPO, ServerProcess, running_node, start_process
from tests.fixtures.titles import make_title
from tests.fixtures.tools import require_tool

MiB = 1024 * 1024
SEGMENTS = 30  # 30 MiB of segments: more than the 20 MB filesystem holds


def media_with_segments(root: Path) -> dict[str, bytes]:
    """The demo title plus SEGMENTS big segments; URL path -> bytes of those."""
    # most fit in one piece; every tenth is held in pieces (5 MiB)
    big = {f"v0/big_{i:02d}.ts": os.urandom(MiB + i if i % 10 else 5 * MiB + i)
           for i in range(SEGMENTS)}
    make_title(root, extra=big)
    return {f"/demo/{rel}": data for rel, data in big.items()}


async def fetch_ranges(base: str, files: dict[str, bytes]) -> list[str]:
    """A range deep inside every file; the paths whose answer was not exactly those bytes."""
    wrong = []
    async with aiohttp.ClientSession() as s:
        for path, data in files.items():
            start = len(data) - 1000
            async with s.get(base + path, headers={"Range": f"bytes={start}-{start + 99}"}) as r:
                body = await r.read()
                if r.status != 206 or body != data[start:start + 100]:
                    wrong.append(f"{path}: {r.status}")
    return wrong


@contextlib.contextmanager
def edge_on_small_disk(upstream: str, cache_dir: Path, log: Path,
                       workers: int = 1) -> Iterator[ServerProcess]:
    """An edge process whose --cache-dir is a 20 MB tmpfs mounted in its own mount namespace
    (as root with `unshare -m`, else `unshare -r -m`)."""
    unshare = require_tool("unshare")
    cache_dir.mkdir(parents=True, exist_ok=True)
    ns = [unshare, "-m", "--propagation", "private"] if os.geteuid() == 0 else \
        [unshare, "-r", "-m", "--propagation", "private"]
    script = 'mount -t tmpfs -o size=20m tmpfs "$0" && exec "$@"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    env.update({"EDGE360_EDGE_CACHE_DISK_BYTES": "1GiB", "EDGE360_EDGE_CACHE_MEMORY_BYTES": "64MiB",
                "EDGE360_EDGE_PREFETCH_DEPTH": "0"})
    with open(log, "wb") as err:
        proc = subprocess.Popen([*ns, "sh", "-c", script, str(cache_dir), sys.executable, "-m",
                                 "edge360", "serve", "--role", "edge", "--port", "0",
                                 "--upstream", upstream, "--cache-dir", str(cache_dir),
                                 "--workers", str(workers)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    sp: ServerProcess | None = None
    deadline = time.monotonic() + 30
    while sp is None and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            m = READY_RE.match(proc.stdout.readline())
            if m:
                sp = ServerProcess(proc, m.group(0), m.group(2).rstrip("/"))
    if sp is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=5)
        raise AssertionError(f"edge not ready: {log.read_text()[-2000:]}")
    try:
        yield sp
    finally:
        sp.stop()


async def fetch_all(base: str, files: dict[str, bytes]) -> list[str]:
    """Fetch every file (4 at a time); the paths whose body was not exactly the file's."""
    wrong: list[str] = []
    gate = asyncio.Semaphore(4)

    async def one(s: aiohttp.ClientSession, path: str, data: bytes) -> None:
        async with gate:
            try:
                async with s.get(base + path) as r:
                    body = await r.read()
                    if r.status != 200 or hashlib.sha256(body).digest() != \
                            hashlib.sha256(data).digest():
                        wrong.append(f"{path}: {r.status} {len(body)}")
            except aiohttp.ClientError as e:
                wrong.append(f"{path}: {e!r}")
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, p, d) for p, d in files.items()))
    return wrong


async def test_a_full_disk_degrades_to_memory_never_to_wrong_bytes(tmp_path: Path) -> None:
    files = media_with_segments(tmp_path / "media")
    origin = start_process(["serve", "--port", "0", "--media", str(tmp_path / "media")])
    log = tmp_path / "edge.log"
    try:
        with edge_on_small_disk(origin.base, tmp_path / "cache", log) as e:
            assert await fetch_ranges(e.base, files) == []  # cold ranges, pieces among them
            assert await fetch_all(e.base, files) == []
            assert await fetch_all(e.base, files) == []  # again: from memory, disk or parent
            async with aiohttp.ClientSession() as s:
                assert await metric(s, e.base, "edge360_cache_write_errors_total",
                                    'tier="disk"') >= 1
                async with s.get(e.base + "/healthz") as r:
                    assert r.status == 200
    finally:
        origin.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert 1 <= text.count("disk tier write failed") <= 2, text[-3000:]


class FailingDisk(DiskCache):
    """A disk tier whose writes fail with EIO (a dying disk), reads as usual."""

    def put(self, key: str, meta: bytes, body: bytes) -> list[str]:
        raise OSError(errno.EIO, "Input/output error")


async def test_a_disk_failing_with_eio_leaves_every_answer_whole(tmp_path: Path) -> None:
    files = media_with_segments(tmp_path / "media")
    origin = start_process(["serve", "--port", "0", "--media", str(tmp_path / "media")])
    flags: dict[str, Any] = {"server.role": "edge", "edge.upstreams": [origin.base],
                             "edge.cache_dir": str(tmp_path / "cache"),
                             "edge.health_interval": 30, "edge.prefetch_depth": 0}
    from tests.fixtures.servers import make_config
    try:
        async with running_node(make_config(flags)) as (base, app):
            store = app.role.state.store  # type: ignore[attr-defined]
            store.disk = FailingDisk(tmp_path / "cache", 1 << 30)
            picked = dict(list(files.items())[:6])
            assert await fetch_all(base, picked) == []
            assert await fetch_all(base, picked) == []
            async with aiohttp.ClientSession() as s:
                assert await metric(s, base, "edge360_cache_write_errors_total",
                                    'tier="disk"') >= 6
            assert len(store.memory) > 0
    finally:
        origin.stop()
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
