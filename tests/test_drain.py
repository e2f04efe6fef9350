"""Graceful drain in the order of docs/HTTP.md, "Drain": /healthz 503 while still serving, then the
listener closes, then in-flight responses finish within drain_timeout, and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.fixtures.servers import start_process
from tests.fixtures.titles import add_files

BIG = 8 * 1024 * 1024


async def slow_download(base: str, path: str, started: asyncio.Event) -> int:
    """Read a big body slowly over a raw connection; returns the body bytes received."""
    u = urlsplit(base)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    started.set()
    received = 0
    for _ in range(10_000):  # bounded: 8 MiB in 64 KiB reads takes at most 128 rounds
        chunk = await reader.read(64 * 1024)
        if not chunk:
            break
        received += len(chunk)
        await asyncio.sleep(0.02)
    writer.close()
    return received


async def status_of(base: str, path: str) -> int | None:
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as s, \
                s.get(base + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
            await r.read()
            return r.status
    except aiohttp.ClientConnectionError:
        return None


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_drain_order_and_in_flight_responses_finish(tiny_media: Path, workers: str) -> None:
    add_files(tiny_media / "tiny", {"v0/big.ts": os.urandom(BIG)})
    env = {"EDGE360_SERVER_DRAIN_DELAY": "1.5", "EDGE360_SERVER_DRAIN_TIMEOUT": "20"}
    sp = start_process(["serve", "--port", "0", "--workers", workers, "--media", str(tiny_media)],
                       env)
    try:
        assert await status_of(sp.base, "/healthz") == 200
        started = asyncio.Event()
        download = asyncio.create_task(slow_download(sp.base, "/tiny/v0/big.ts", started))
        await asyncio.wait_for(started.wait(), 10)
        os.kill(sp.proc.pid, signal.SIGTERM)
        # during drain_delay: unhealthy for the balancer, but content still flows
        seen_503 = False
        for _ in range(40):
            code = await status_of(sp.base, "/healthz")
            if code == 503:
                seen_503 = True
                break
            await asyncio.sleep(0.05)
        assert seen_503
        assert await status_of(sp.base, "/tiny/v0/seg_000.ts") == 200
        # then the listener closes: new connections are refused
        refused = False
        for _ in range(100):
            if await status_of(sp.base, "/healthz") is None:
                refused = True
                break
            await asyncio.sleep(0.1)
        assert refused
        assert await asyncio.wait_for(download, 60) == BIG
    finally:
        code = sp.stop()
    assert code == 0
