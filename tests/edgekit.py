"""Test kit for the edge: a generated HLS title on disk, an origin + edge chain on loopback, and
small hostile upstreams (fakes, not mocks) that record what they were asked."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import publish
from tests.servers import make_config, running_app

SEGMENTS = 4


def make_title(root: Path, name: str = "demo", seed: int = 7) -> dict[str, bytes]:
    """A title with two segmented renditions and one single-file (byte-range) rendition.
    Returns title-relative path -> bytes of every media file."""
    rnd = random.Random(seed)
    d = root / name
    files: dict[str, bytes] = {}
    for rendition, size in (("v0", 90_000), ("v1", 150_000)):
        (d / rendition).mkdir(parents=True)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4",
                 "#EXT-X-PLAYLIST-TYPE:VOD"]
        for i in range(SEGMENTS):
            data = rnd.randbytes(size + i * 1000)
            (d / rendition / f"seg_{i:03d}.ts").write_bytes(data)
            files[f"{rendition}/seg_{i:03d}.ts"] = data
            lines += ["#EXTINF:4.0,", f"seg_{i:03d}.ts"]
        lines.append("#EXT-X-ENDLIST")
        (d / rendition / "index.m3u8").write_text("\n".join(lines) + "\n")
    (d / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nv0/index.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1400000,RESOLUTION=1280x720\nv1/index.m3u8\n")
    (d / "br").mkdir()
    blob = rnd.randbytes(600_000)
    (d / "br" / "stream.ts").write_bytes(blob)
    files["br/stream.ts"] = blob
    lines = ["#EXTM3U", "#EXT-X-VERSION:4", "#EXT-X-TARGETDURATION:4", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for i in range(6):
        lines += ["#EXTINF:4.0,", f"#EXT-X-BYTERANGE:100000@{i * 100_000}", "stream.ts"]
    lines.append("#EXT-X-ENDLIST")
    (d / "br" / "index.m3u8").write_text("\n".join(lines) + "\n")
    (d / "master_br.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nbr/index.m3u8\n")
    publish(d)
    return files


@contextlib.asynccontextmanager
async def origin(media: Path, **flags: Any) -> AsyncIterator[str]:
    async with running_app(make_config({"server.role": "origin", "origin.media": str(media),
                                        **flags})) as url:
        yield url


@contextlib.asynccontextmanager
async def edge(upstreams: list[str], env: dict[str, str] | None = None, *,
               clock: Callable[[], float] | None = None, **flags: Any) -> AsyncIterator[str]:
    """An edge in front of `upstreams`; `clock`: the node's clock (a test's FakeClock)."""
    config = make_config({"server.role": "edge", "edge.upstreams": upstreams,
                          "edge.health_interval": 30, **flags}, env)
    async with running_app(config, **({"clock": clock} if clock is not None else {})) as url:
        yield url


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeUpstream:
    """An aiohttp app whose one handler the test writes; records every request it saw."""

    handler: Handler
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def count(self, path: str) -> int:
        return sum(1 for _, p, _h in self.seen if p.split("?")[0] == path)


@contextlib.asynccontextmanager
async def fake_upstream(handler: Handler) -> AsyncIterator[tuple[str, FakeUpstream]]:
    fake = FakeUpstream(handler)

    async def entry(request: web.Request) -> web.StreamResponse:
        if request.path == "/healthz":
            return web.json_response({"status": "ok"})
        fake.seen.append((request.method, request.path_qs, dict(request.headers)))
        return await fake.handler(request)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", entry)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])  # public API: where the runner's site listens
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        await runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str,
              headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    """(status, headers looked up case-insensitively, body) of one GET."""
    async with session.get(url, headers=headers or {}) as r:
        body = await r.read()
        return r.status, CIMultiDict(r.headers), body
