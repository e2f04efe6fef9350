"""SIGHUP with real processes: an edge started with --config FILE re-reads it and applies new
parents and rate limits while a slow download through it goes on and completes intact; new misses
go to the new parent (counted in its access log); keys that need a restart are named and left; a
broken file is logged and the node keeps serving with what it had. Plus the merge itself."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from pathlib import Path

import aiohttp

from edge360.config.live import LIVE_KEYS, merge_live
from edge360.config.schema import load
from tests.fixtures.fleets import fleet
from tests.fixtures.titles import make_title

BIG = "/demo/big/blob.ts"


def edge_toml(upstream: str, rate: float = 0.0, burst: float = 0.0, memory: str = "256MiB") -> str:
    return (f'[server]\nrole = "edge"\nport = 0\n[edge]\nupstreams = ["{upstream}"]\n'
            f'health_interval = 0.2\nprefetch_depth = 0\ncache_memory_bytes = "{memory}"\n'
            f'[limits]\nrate_per_ip = {rate}\nrate_burst = {burst}\n')


def wait_log(log: Path, needle: str, count: int = 1, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.05)):
        if log.read_text().count(needle) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never logged: {log.read_text()[-1500:]}")


async def statuses(base: str, path: str, n: int) -> list[int]:
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(base + path) as r:
                await r.read()
                out.append(r.status)
    return out


def start_download(port: int) -> tuple[socket.socket, bytes]:
    """A slow reader: the request sent, a little of the answer read, the rest left waiting."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {BIG}?sid=slowreader01 HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n"
              .encode())
    return s, s.recv(16384)


def finish_download(s: socket.socket, got: bytes) -> bytes:
    data = bytearray(got)
    with s:
        while len(data) < 1 << 25:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body


async def test_sighup_moves_parents_and_limits_without_dropping(tmp_path: Path) -> None:
    media = tmp_path / "media"
    blob = random.Random(3).randbytes(12 * 1024 * 1024)  # pieced, far more than socket buffers
    make_title(media, extra={"big/blob.ts": blob})
    cfg = tmp_path / "edge.toml"
    with fleet(tmp_path) as f:
        a = f.start("a", ["--port", "0", "--media", str(media)], {}).base
        b = f.start("b", ["--port", "0", "--media", str(media)], {}).base
        cfg.write_text(edge_toml(a))
        # no access log at the edge (its stderr carries only the reload lines)
        edge = f.start("edge", ["--config", str(cfg)], {"EDGE360_SERVER_ACCESS_LOG": "false"})
        port = int(edge.base.rsplit(":", 1)[1])
        log = tmp_path / "edge.log"

        assert await statuses(edge.base, "/demo/v0/seg_000.ts", 20) == [200] * 20  # no limit
        sock, got = start_download(port)

        cfg.write_text(edge_toml(b, rate=0.001, burst=3, memory="128MiB"))
        os.kill(edge.proc.pid, signal.SIGHUP)
        wait_log(log, "reload: applied edge.upstreams, limits.rate_per_ip, limits.rate_burst")
        assert "edge.cache_memory_bytes cannot change without a restart" in log.read_text()

        at_b = len(f.log("b"))
        new = ["/demo/v1/seg_000.ts", "/demo/v1/seg_001.ts"]
        for path in new:  # misses now: fetched from B, never from A
            assert await statuses(edge.base, path, 1) == [200]
        assert {ln["path"] for ln in f.log("b")[at_b:]} >= set(new)
        assert not {ln["path"] for ln in f.log("a")} & set(new)
        # the bucket (3) is spent: the new limit applies where there was none
        assert (await statuses(edge.base, "/demo/v0/seg_000.ts", 5))[-2:] == [429, 429]

        # the download that was in flight across the reload ends intact
        assert await asyncio.to_thread(finish_download, sock, got) == blob

        # a broken file: logged, ignored; the node serves on with what it had (the limit too)
        cfg.write_text("[edge\nupstreams = ")
        os.kill(edge.proc.pid, signal.SIGHUP)
        wait_log(log, "reload refused, still serving with the previous config")
        assert (await statuses(edge.base, "/demo/v1/seg_000.ts", 1)) == [429]
        async with aiohttp.ClientSession() as s, s.get(edge.base + "/healthz") as r:
            assert r.status == 200 and list((await r.json())["parents"]) == [b]
        assert edge.proc.poll() is None


def test_merge_applies_live_keys_and_names_the_rest() -> None:
    running = load(None, {}, {"server.role": "edge", "edge.upstreams": ["http://a:1"]})
    fresh = load(None, {}, {"server.role": "edge", "edge.upstreams": ["http://b:1"],
                            "limits.rate_per_ip": 5, "server.workers": 4,
                            "limits.keepalive_timeout": 9})
    merged, changed, frozen = merge_live(running, fresh)
    assert changed == ["edge.upstreams", "limits.rate_per_ip"]
    assert frozen == ["server.workers", "limits.keepalive_timeout"]
    assert merged.edge.upstreams == ("http://b:1",) and merged.limits.rate_per_ip == 5
    assert merged.server.workers == 1 and merged.limits.keepalive_timeout == 75
    assert merge_live(running, running) == (running, [], [])
    assert all(k in ("edge", "server", "limits", "sessions") for k, _ in LIVE_KEYS)
