"""A small real HLS server for the replay tests, run in a thread on 127.0.0.1:0.

It serves a generated two-rendition title (one segmented, one EXT-X-BYTERANGE), honours Range, can
rewrite playlists with a per-viewer `sid` as edge360 does, and can expose `/metrics` and
`/api/stats` counting sessions by one of two rules: by requests (active from the first request
until `idle` seconds pass without one), or, given a `time_scale`, by play-out (active from the
first segment until the later of the last request and the first segment plus the media seconds
fetched divided by `time_scale`, plus `idle`; its /api/stats then reports `time_scale`). It
records which connection (peer address) each request came over. It is the fixture the replayer
runs against, not the thing under test.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

SEGMENTS = 10
SEGMENT_S = 6.0
SEGMENT_BYTES = 2000


@dataclass
class ServerLog:
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    last_seen: dict[str, float] = field(default_factory=dict)
    #: per request, in order: (sid, the peer's (address, port))
    peers: list[tuple[str | None, tuple[str, int]]] = field(default_factory=list)
    #: per sid: (first segment's time, media seconds fetched) for the play-out rule
    played: dict[str, tuple[float, float]] = field(default_factory=dict)


def _master(sid: str | None) -> str:
    q = f"?sid={sid}" if sid else ""
    return ("#EXTM3U\n#EXT-X-VERSION:4\n"
            f'#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlo/index.m3u8{q}\n'
            f'#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080\nhi/index.m3u8{q}\n')


def _media(rendition: str, sid: str | None) -> str:
    q = f"?sid={sid}" if sid else ""
    lines = ["#EXTM3U", "#EXT-X-VERSION:4", f"#EXT-X-TARGETDURATION:{int(SEGMENT_S)}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for i in range(SEGMENTS):
        lines.append(f"#EXTINF:{SEGMENT_S:.3f},")
        if rendition == "hi":
            # offset given on the first range only: the rest follow on (RFC 8216 §4.3.2.2)
            lines.append(f"#EXT-X-BYTERANGE:{SEGMENT_BYTES}" + ("@0" if i == 0 else ""))
            lines.append(f"all.ts{q}")
        else:
            lines.append(f"seg{i}.ts{q}")
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def build_app(*, rewrite: bool, metrics: bool, idle: float, log: ServerLog,
              time_scale: float | None = None) -> web.Application:
    body = bytes(range(256)) * (SEGMENTS * SEGMENT_BYTES // 256 + 1)

    def touch(sid: str | None, segment: bool = False) -> None:
        if sid:
            now = log.last_seen[sid] = time.monotonic()
            if segment:
                first, fetched = log.played.get(sid, (now, 0.0))
                log.played[sid] = (first, fetched + SEGMENT_S)

    async def content(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        sid = request.query.get("sid")
        log.requests.append((path, sid, request.headers.get("Range")))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        log.peers.append((sid, (str(peer[0]), int(peer[1])) if peer else ("", 0)))
        if path == "t/master.m3u8":
            if rewrite and not sid:
                sid = secrets.token_urlsafe(9)
            touch(sid)
            return web.Response(text=_master(sid if rewrite else None),
                                content_type="application/vnd.apple.mpegurl")
        if path in ("t/lo/index.m3u8", "t/hi/index.m3u8"):
            touch(sid)
            return web.Response(text=_media(path.split("/")[1], sid if rewrite else None),
                                content_type="application/vnd.apple.mpegurl")
        if path == "t/hi/all.ts":
            rng = request.http_range
            start = rng.start or 0
            stop = min(rng.stop if rng.stop is not None else len(body), SEGMENTS * SEGMENT_BYTES)
            touch(sid, segment=True)
            return web.Response(body=body[start:stop], status=206 if rng.start is not None
                                else 200, content_type="video/mp2t")
        if path.startswith("t/lo/seg") and path.endswith(".ts"):
            touch(sid, segment=True)
            return web.Response(body=body[:SEGMENT_BYTES], content_type="video/mp2t")
        raise web.HTTPNotFound()

    async def stats(_: web.Request) -> web.Response:
        answer = {"idle_timeout": idle, "sessions_active": active(), "sessions_peak": 0,
                  "views_total": len(log.last_seen)}
        if time_scale is not None:
            answer["time_scale"] = time_scale
        return web.json_response(answer)

    def active() -> int:
        now = time.monotonic()
        if time_scale is None:
            return sum(1 for t in log.last_seen.values() if now - t < idle)
        count = 0
        for sid, (first, fetched) in log.played.items():
            end = max(log.last_seen[sid], first + fetched / time_scale) + idle
            count += first <= now < end
        return count

    async def metrics_page(_: web.Request) -> web.Response:
        text = ("# HELP edge360_sessions_active sessions\n# TYPE edge360_sessions_active gauge\n"
                f'edge360_sessions_active{{title="t",rendition="a"}} {active()}\n'
                'edge360_sessions_active{title="t",rendition="b"} 0\n')
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/api/stats", stats)
    if metrics:
        app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/{path:.*}", content)
    return app


class ThreadServer:
    """Runs an aiohttp app on its own loop in a thread so blocking replay code can call it."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        self._loop.run_until_complete(site.start())
        addresses = self._runner.addresses
        self.port = int(addresses[0][1])
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/t/master.m3u8"
