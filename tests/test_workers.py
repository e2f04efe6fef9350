"""--workers N: one port, node-wide exact counts whichever worker answers, drain, state file."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.servers import start_process


async def get_json(url: str) -> dict[str, object]:
    # a fresh connection per call, so successive calls land on different workers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.get(url) as r:
        assert r.status == 200
        data = orjson.loads(await r.read())
        assert isinstance(data, dict)
        return data


async def play(base: str, sid: str) -> None:
    """One viewer: media playlist and a segment, each on its own connection."""
    for path in (f"/tiny/v0/index.m3u8?sid={sid}", f"/tiny/v0/seg_000.ts?sid={sid}",
                 f"/tiny/v0/seg_001.ts?sid={sid}"):
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as s, s.get(base + path) as r:
            assert r.status == 200
            await r.read()


def active_from_metrics(text: str) -> tuple[float, float]:
    active = views = 0.0
    for line in text.splitlines():
        if line.startswith("edge360_sessions_active{"):
            active += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edge360_views_total{"):
            views += float(line.rsplit(" ", 1)[1])
    return active, views


async def test_counts_are_node_wide_whichever_worker_answers(tiny_media: Path) -> None:
    sp = start_process(["serve", "--port", "0", "--workers", "2", "--media", str(tiny_media)])
    try:
        viewers = [f"viewer-{i:04d}" for i in range(40)]
        await asyncio.gather(*(play(sp.base, sid) for sid in viewers))
        answers = [await get_json(sp.base + "/api/stats") for _ in range(8)]
        for stats in answers:
            assert stats["sessions_active"] == 40
            assert stats["views_total"] == 40
            assert stats["sessions_peak"] == 40
            assert stats["workers"] == 2
        for _ in range(6):
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as s, \
                    s.get(sp.base + "/metrics") as r:
                active, views = active_from_metrics(await r.text())
            assert (active, views) == (40.0, 40.0)
    finally:
        assert sp.stop(signal.SIGTERM) == 0


async def test_state_survives_a_graceful_restart(tiny_media: Path, tmp_path: Path) -> None:
    state = tmp_path / "sessions.json"
    env = {"EDGE360_SESSIONS_STATE_FILE": str(state)}
    for workers in ("1", "2"):
        if state.exists():
            state.unlink()
        args = ["serve", "--port", "0", "--workers", workers, "--media", str(tiny_media)]
        sp = start_process(args, env)
        try:
            await asyncio.gather(*(play(sp.base, f"keep-{workers}-{i:03d}") for i in range(12)))
            before = await get_json(sp.base + "/api/stats")
            assert before["views_total"] == 12
        finally:
            assert sp.stop() == 0
        assert state.exists()
        sp = start_process(args, env)
        try:
            after = await get_json(sp.base + "/api/stats")
            assert after["sessions_peak"] == 12 and after["views_total"] == 12
            # the open sessions came back too, still within their idle timeout
            assert after["sessions_active"] == 12
            # a returning viewer is the same session, not a new view
            await play(sp.base, f"keep-{workers}-000")
            assert (await get_json(sp.base + "/api/stats"))["views_total"] == 12
        finally:
            assert sp.stop() == 0


async def test_play_out_is_counted_node_wide_and_kept_across_a_restart(
        tiny_media: Path, tmp_path: Path) -> None:
    """A viewer fetches 6 s of media at once (each request on its own connection, so on any
    worker) and then nothing: the hub keeps it active for the play-out of that media, far past
    the idle timeout, a graceful restart keeps that, and its CMCD (here: a rate of 8 and an
    empty buffer) reaches the hub and ends it early."""
    state = tmp_path / "sessions.json"
    env = {"EDGE360_SESSIONS_STATE_FILE": str(state), "EDGE360_SESSIONS_IDLE_TIMEOUT": "0.5",
           "EDGE360_SESSIONS_TIME_SCALE": "0.1"}  # 6 s of media take 60 s to play out
    args = ["serve", "--port", "0", "--workers", "2", "--media", str(tiny_media)]
    sp = start_process(args, env)
    try:
        await play(sp.base, "buffered-0001")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
                s.get(sp.base + "/tiny/v0/seg_002.ts?sid=buffered-0001") as r:
            assert r.status == 200
            await r.read()
        await asyncio.sleep(1.5)  # three idle timeouts without a request
        for _ in range(4):
            stats = await get_json(sp.base + "/api/stats")
            assert (stats["sessions_active"], stats["views_total"]) == (1, 1), stats
    finally:
        assert sp.stop() == 0
    sp = start_process(args, env)
    try:
        stats = await get_json(sp.base + "/api/stats")
        assert (stats["sessions_active"], stats["views_total"]) == (1, 1), stats
        # the player says it plays at 8x with an empty buffer: one 2 s segment (and the slack
        # of one more) at 8x is 0.5 s of play-out, then the idle timeout
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
                s.get(sp.base + "/tiny/v0/seg_000.ts?sid=buffered-0001",
                      headers={"CMCD-Status": "bs", "CMCD-Session": "pr=8"}) as r:
            assert r.status == 200
            await r.read()
        for _ in range(100):  # ended within about a second; 10 s at most
            stats = await get_json(sp.base + "/api/stats")
            if stats["sessions_active"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (stats["sessions_active"], stats["views_total"]) == (0, 1), stats
    finally:
        assert sp.stop() == 0
