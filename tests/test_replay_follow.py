"""The virtual player following live playlists (RFC 8216 §6.3.3-6.3.5) against real servers.

A small aiohttp live server the test advances (a window of WINDOW segments: append one, drop the
oldest, finally EXT-X-ENDLIST) with one segmented and one EXT-X-BYTERANGE rendition, and a real
`edge360 serve` origin whose media root the test rewrites. The player runs as in a replay: a real
aiohttp client session, its own pacing and reloads. Times are compressed (1 s target durations at
speed 4); every wait is bounded, and the only time checks are lower bounds the player's own sleeps
guarantee however slow the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from edge360.replay import command
from edge360.replay.model import Viewer
from edge360.replay.player import PlayerConfig, Stats, VirtualPlayer
from edge360.replay.truth import Rule
from tests.fixtures.hls_server import ThreadServer, serving
from tests.fixtures.servers import start_process

WINDOW = 6          # segments in the live window
TARGET = 1          # seconds: every segment's duration and the target duration
SPEED = 4.0         # so a target duration is 0.25 real seconds
SIZE = 500          # bytes per segment
TOKEN = "tok-1"     # an access token the master hands out with the sid
SID = "viewer0sid1"
EDGE = WINDOW - 3   # where a player joins the first window: the third-last segment (§6.3.3)


@dataclass
class Hit:
    kind: str                 # "master", "playlist" or "segment"
    rendition: str
    sequence: int | None      # segments: their media sequence number
    query: dict[str, str]
    version: tuple[int, bool] | None = None   # playlists: (first sequence, ended) answered


@dataclass
class LiveStream:
    """A live title: lo/seg_N.ts segments and hi/all.ts addressed by byte range, one window.

    `auto_step` makes it advance by itself every so many real seconds, like a packager."""

    auto_step: float | None = None
    start: float = field(default_factory=time.monotonic)
    pushed: int = 0           # segments appended (and dropped) by the test
    ended: bool = False
    hits: list[Hit] = field(default_factory=list)

    @property
    def first(self) -> int:
        if self.auto_step is not None:
            return int((time.monotonic() - self.start) / self.auto_step)
        return self.pushed

    @property
    def last(self) -> int:
        return self.first + WINDOW - 1

    def segments(self) -> list[int]:
        return [h.sequence for h in self.hits if h.kind == "segment" and h.sequence is not None]

    def playlist(self, rendition: str, query: str) -> str:
        first = self.first
        lines = ["#EXTM3U", "#EXT-X-VERSION:4", f"#EXT-X-TARGETDURATION:{TARGET}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, first + WINDOW):
            lines.append(f"#EXTINF:{TARGET:.1f},")
            if rendition == "hi":
                # only the window's first range carries its offset (§4.3.2.2)
                lines.append(f"#EXT-X-BYTERANGE:{SIZE}" + (f"@{n * SIZE}" if n == first else ""))
                lines.append(f"all.ts?{query}")
            else:
                lines.append(f"seg_{n}.ts?{query}")
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def app(self) -> web.Application:
        async def master(request: web.Request) -> web.Response:
            self.hits.append(Hit("master", "", None, dict(request.query)))
            q = f"sid={SID}&token={TOKEN}"
            return web.Response(text="#EXTM3U\n"
                                f"#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo/index.m3u8?{q}\n"
                                f"#EXT-X-STREAM-INF:BANDWIDTH=5000000\nhi/index.m3u8?{q}\n",
                                content_type="application/vnd.apple.mpegurl")

        async def media(request: web.Request) -> web.Response:
            rendition = request.match_info["rendition"]
            version = (self.first, self.ended)
            self.hits.append(Hit("playlist", rendition, None, dict(request.query), version))
            return web.Response(text=self.playlist(rendition, request.query_string),
                                content_type="application/vnd.apple.mpegurl")

        async def segment(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            self.hits.append(Hit("segment", "lo", n, dict(request.query)))
            if n > self.last:
                raise web.HTTPNotFound()
            return web.Response(body=b"\x47" * SIZE, content_type="video/mp2t")

        async def single_file(request: web.Request) -> web.Response:
            rng = request.http_range
            start, stop = rng.start or 0, rng.stop
            whole = start % SIZE == 0 and stop is not None and stop - start == SIZE
            self.hits.append(Hit("segment", "hi", start // SIZE if whole else -1,
                                 dict(request.query)))
            if stop is None or start // SIZE > self.last:
                raise web.HTTPRequestRangeNotSatisfiable()
            return web.Response(body=b"\x47" * (stop - start), status=206,
                                content_type="video/mp2t")

        app = web.Application()
        app.router.add_get("/live/master.m3u8", master)
        app.router.add_get("/live/{rendition}/index.m3u8", media)
        app.router.add_get("/live/lo/seg_{n:\\d+}.ts", segment)
        app.router.add_get("/live/hi/all.ts", single_file)
        return app


@contextlib.asynccontextmanager
async def client(starts: list[tuple[str, float]] | None = None
                 ) -> AsyncIterator[aiohttp.ClientSession]:
    """A session like the replay's; `starts` gets (URL path, monotonic time) as requests begin."""
    trace = aiohttp.TraceConfig()

    async def began(_: aiohttp.ClientSession, __: object,
                    params: aiohttp.TraceRequestStartParams) -> None:
        if starts is not None:
            starts.append((params.url.path, time.monotonic()))
    trace.on_request_start.append(began)
    async with aiohttp.ClientSession(auto_decompress=False, trace_configs=[trace]) as http:
        yield http


def player(http: aiohttp.ClientSession, master: str, *, switch: float = 0.0
           ) -> tuple[VirtualPlayer, Stats]:
    """A viewer who would watch for days: only the stream's end lets it go."""
    stats = Stats(rule=Rule(30, None))
    config = PlayerConfig(master_url=master, speed=SPEED, loop=False, seed=5,
                          switch_probability=switch)
    return VirtualPlayer(http, Viewer(0, 0.0, 1e6, 0.0), config, stats), stats


async def until(what: str, ready: Callable[[], bool], task: asyncio.Task[None],
                limit_s: float = 20.0) -> None:
    """Wait (bounded) until `ready()`; fail at once if the player stopped before."""
    step = 0.01
    for _ in range(int(limit_s / step)):
        if ready():
            return
        assert not task.done(), f"the player stopped while waiting for {what}"
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


async def drive(stream: LiveStream, fetched: Callable[[], list[int]], task: asyncio.Task[None],
                advances: int, *, jump_at: int | None = None) -> None:
    """Publish `advances` segments, each a target duration after the player reached the live
    edge (so it never falls behind by accident); at `jump_at`, slide a whole window past it."""
    for i in range(advances):
        await until(f"segment {stream.last}", lambda: stream.last in fetched(), task)
        await asyncio.sleep(TARGET / SPEED)
        stream.pushed += WINDOW + 2 if i == jump_at else 1
    await until(f"segment {stream.last}", lambda: stream.last in fetched(), task)
    # caught up, the player keeps reloading a playlist that does not change
    await until("an unchanged reload", lambda: _unchanged(stream.hits), task)
    stream.pushed += 1                  # the last segment comes with EXT-X-ENDLIST
    stream.ended = True
    await asyncio.wait_for(task, 30)


def _unchanged(hits: list[Hit]) -> bool:
    playlists = [(h.rendition, h.version) for h in hits if h.kind == "playlist"]
    return len(playlists) >= 2 and playlists[-1] == playlists[-2]


async def test_follows_a_live_playlist_fetching_each_new_segment_once() -> None:
    stream, starts = LiveStream(), []
    async with serving(stream.app()) as base, client(starts) as http:
        viewer, stats = player(http, f"{base}/live/master.m3u8")
        task = asyncio.create_task(viewer.run())
        try:
            await drive(stream, stream.segments, task, advances=6)
        finally:
            task.cancel()
    assert stats.errors == {} and stats.live_skips == 0
    # joined at the live edge, then every new segment exactly once, in sequence order, to the end
    assert stream.segments() == list(range(EDGE, stream.last + 1))
    playlists = [h for h in stream.hits if h.kind == "playlist"]
    assert len({h.rendition for h in playlists}) == 1             # no switch asked for
    assert stats.reloads == len(playlists) - 1 >= 6
    # each reload carried the viewer's sid and token
    assert all(h.query == {"sid": SID, "token": TOKEN} for h in stream.hits[1:])
    # ENDLIST ended it: one ended answer, no reload after it, the last segment played out
    assert [h.version for h in playlists].count((stream.first, True)) == 1
    assert playlists[-1].version == (stream.first, True)
    assert stream.hits[-1].kind == "segment" and stream.hits[-1].sequence == stream.last
    # §6.3.4 as lower bounds the player's sleeps guarantee: after a changed (or the first)
    # playlist wait a target duration from the load's start, after an unchanged one half of one
    began = [t for path, t in starts if path.endswith("index.m3u8")]
    assert len(began) == len(playlists)
    versions = [None, *(h.version for h in playlists)]
    for k in range(len(playlists) - 1):
        changed = versions[k + 1] != versions[k]
        wait = TARGET / SPEED * (1.0 if changed else 0.5)
        assert began[k + 1] - began[k] >= wait - 0.005, (k, changed)
    assert any(versions[k + 1] == versions[k] for k in range(1, len(playlists) + 1))


async def test_falls_behind_then_rejoins_at_the_live_edge_and_counts_it() -> None:
    stream = LiveStream()
    async with serving(stream.app()) as base, client() as http:
        viewer, stats = player(http, f"{base}/live/master.m3u8")
        task = asyncio.create_task(viewer.run())
        try:
            await drive(stream, stream.segments, task, advances=4, jump_at=1)
        finally:
            task.cancel()
    assert stats.errors == {} and stats.live_skips == 1
    got = stream.segments()
    # the first window's edge on, up to the one segment published before the jump (WINDOW);
    # then the window jumped to start at 1 + WINDOW + 2 and the player rejoined at its edge
    rejoined = 1 + WINDOW + 2 + EDGE
    assert got == [*range(EDGE, WINDOW + 1), *range(rejoined, stream.last + 1)]


async def test_rendition_switches_keep_the_sequence_and_byte_ranges_resolve() -> None:
    stream = LiveStream()
    async with serving(stream.app()) as base, client() as http:
        # a link that changes at every segment: switches between lo and the byte-range hi
        viewer, stats = player(http, f"{base}/live/master.m3u8", switch=1.0)
        task = asyncio.create_task(viewer.run())
        try:
            await drive(stream, stream.segments, task, advances=8)
        finally:
            task.cancel()
    assert stats.errors == {} and stats.live_skips == 0
    segments = [h for h in stream.hits if h.kind == "segment"]
    renditions = [h.rendition for h in segments]
    assert "lo" in renditions and "hi" in renditions
    assert any(a != b for a, b in itertools.pairwise(renditions))
    # whatever the rendition, each sequence number once and in order; every hi range was one
    # whole segment at its own offset (sequence -1 marks any other range)
    assert stream.segments() == list(range(EDGE, stream.last + 1))


def _write_live(v0: Path, first: int, *, ended: bool = False) -> None:
    """The live rendition's window on disk: segments first, then the playlist replaced whole."""
    for n in range(first, first + WINDOW):
        seg = v0 / f"seg_{n}.ts"
        if not seg.exists():
            seg.write_bytes(b"\x47" * 376)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{TARGET}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, first + WINDOW):
        lines += [f"#EXTINF:{TARGET:.1f},", f"seg_{n}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    tmp = v0 / ".index.m3u8.tmp"       # a dotfile: the origin's scan never indexes it
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, v0 / "index.m3u8")


async def test_follows_a_live_title_served_by_an_edge360_origin(tmp_path: Path) -> None:
    """The origin gives a live playlist a short lifetime and rescans its media root, so the
    window the test writes reaches the player through a real edge360 origin."""
    v0 = tmp_path / "media" / "live" / "v0"
    v0.mkdir(parents=True)
    (v0.parent / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=400000\nv0/index.m3u8\n")
    _write_live(v0, 0)
    origin = start_process(["serve", "--role", "origin", "--port", "0", "--media",
                            str(tmp_path / "media")], {"EDGE360_ORIGIN_RESCAN_INTERVAL": "0.05"})
    starts: list[tuple[str, float]] = []

    def fetched() -> list[int]:
        return [int(p.rsplit("_", 1)[1][:-3]) for p, _ in starts if p.endswith(".ts")]
    try:
        async with client(starts) as http:
            async with http.get(f"{origin.base}/live/v0/index.m3u8") as resp:
                cache_control = resp.headers["Cache-Control"]
            viewer, stats = player(http, f"{origin.base}/live/master.m3u8")
            task = asyncio.create_task(viewer.run())
            try:
                first = 0
                for _ in range(5):
                    await until(f"segment {first + WINDOW - 1}",
                                lambda f=first: f + WINDOW - 1 in fetched(), task)
                    await asyncio.sleep(TARGET / SPEED)
                    first += 1
                    _write_live(v0, first)
                await until("the last segment", lambda: first + WINDOW - 1 in fetched(), task)
                first += 1
                _write_live(v0, first, ended=True)      # the last segment and EXT-X-ENDLIST
                await asyncio.wait_for(task, 30)
            finally:
                task.cancel()
    finally:
        assert origin.stop() == 0
    # the origin gives the live playlist half a target duration (at least 1 s), not a year
    assert "max-age=1" in cache_control and "immutable" not in cache_control
    assert stats.errors == {} and stats.live_skips == 0
    assert fetched() == list(range(EDGE, first + WINDOW))
    assert stats.reloads >= 5


def test_a_replay_of_a_live_stream_reports_reloads_and_skips(tmp_path: Path) -> None:
    """`edge360 replay` against a stream that advances by itself, one segment a target duration:
    the runner merges the players' live counters (here over two workers) into the report."""
    stream = LiveStream(auto_step=TARGET / SPEED)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with ThreadServer(stream.app()) as srv:
        url = f"http://127.0.0.1:{srv.port}/live/master.m3u8"
        rc = command.run(parser.parse_args([
            "--target", url, "--scale", "0.001", "--speed", f"{SPEED:g}", "--window", "9.5-9.503",
            "--seed", "3", "--workers", "2", "--report", str(tmp_path), "--duration", "30"]))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["viewers_started"] > 0 and report["errors"] == 0, report["errors_by_kind"]
    assert report["playlist_reloads"] > 0 and isinstance(report["live_skips"], int)
    assert "skips to the live edge" in (tmp_path / "report.html").read_text()
