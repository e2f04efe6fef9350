"""Virtual players against real servers: how they buffer, the CMCD they send, the connection each
holds, and the ground truth by the target's counting rule.

The in-loop server (a small aiohttp app) serves one VOD rendition of many 1 s segments and logs
every request with its time, query, headers and peer. Time checks are lower bounds the players'
own sleeps guarantee, however slow the machine is; counts are bounded by what the buffering rule
allows.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from edge360.core.errors import UsageError
from edge360.replay import command, truth
from edge360.replay.model import Viewer
from edge360.replay.player import PlayerConfig, VirtualPlayer
from edge360.replay.profiles import AVPLAYER, EXOPLAYER, HLSJS, PlayerProfile
from edge360.replay.stats import Stats
from edge360.replay.truth import Rule
from edge360.replay.wire import Client
from tests.fixtures.hls_server import ServerLog, ThreadServer, build_app, serving

SPEED = 20.0
BANDWIDTH = 16_000_000        # hls.js keeps 30 s ahead of this rendition
SEGMENTS = 300
FAST = ((1.0, 1e9),)          # a link that never holds a fetch back


@dataclass
class Hit:
    path: str
    at: float
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Vod:
    """One VOD rendition of SEGMENTS x 1 s; `delay` holds segment n back that many seconds."""

    delay: dict[int, float] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def segments(self) -> list[Hit]:
        return [h for h in self.hits if h.path.endswith(".ts")]

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits.append(Hit(name, time.monotonic(), dict(request.query),
                                 dict(request.headers)))
            if name == "master.m3u8":
                return web.Response(text=f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH={BANDWIDTH}\n"
                                    "v.m3u8\n", content_type="application/vnd.apple.mpegurl")
            if name == "v.m3u8":
                lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
                lines += [f"#EXTINF:1.0,\ns{n}.ts" for n in range(SEGMENTS)]
                return web.Response(text="\n".join([*lines, "#EXT-X-ENDLIST", ""]),
                                    content_type="application/vnd.apple.mpegurl")
            n = int(name[1:-3])
            if n in self.delay:
                await asyncio.sleep(self.delay[n])
            return web.Response(body=b"\x47" * 188, content_type="video/mp2t")

        app = web.Application()
        app.router.add_get("/t/{name}", handle)
        return app


async def play(vod: Vod, *, profile: PlayerProfile = HLSJS, watch_s: float = 40.0,
               links: tuple[tuple[float, float], ...] = FAST,
               cmcd: str | None = None) -> Stats:
    """One viewer, on its own connection, for `watch_s` media seconds."""
    stats = Stats(rule=Rule(1.0, None))
    async with serving(vod.app()) as base, Client() as client:
        line = client.line()
        config = PlayerConfig(master_url=f"{base}/t/master.m3u8", speed=SPEED, loop=False,
                              seed=1, profile=profile, links=links, cmcd=cmcd)
        await asyncio.wait_for(VirtualPlayer(line, Viewer(0, 0.0, watch_s, 0.0), config,
                                             stats).run(), 60)
        line.close()
    return stats


@pytest.mark.parametrize("profile", [HLSJS, EXOPLAYER, AVPLAYER], ids=lambda p: p.name)
async def test_players_keep_their_profiles_goal_ahead(profile: PlayerProfile) -> None:
    vod = Vod()
    stats = await play(vod, profile=profile)
    goal = profile.goal_for(BANDWIDTH)
    fetched = len(vod.segments())
    assert stats.errors == {} and len(stats.records) == 1
    # it never fetches with its goal buffered, so at its quit it holds at most goal + a segment;
    # it filled to the goal first (a player woken this late would have stalled)
    ahead = fetched - stats.played_s
    assert ahead <= goal + 1 + 1e-6
    assert ahead >= goal / 2 or stats.stall_s > 0
    assert fetched >= goal and stats.played_s <= 40.0 + 1e-6
    record = stats.records[0]
    assert record.fetched_s == fetched and record.watch_from is not None


async def test_the_start_up_fill_goes_at_link_speed() -> None:
    """A 16 Mbit/s segment over a 32 Mbit/s link takes half its duration (compressed by speed):
    the fill to the goal is that fast and no faster."""
    vod = Vod()
    await play(vod, links=((1.0, 32e6),), watch_s=20.0)
    times = [h.at for h in vod.segments()]
    per_segment = 0.5 / SPEED
    assert len(times) >= 30
    assert times[29] - times[0] >= 29 * per_segment - 0.005


def _cmcd(hit: Hit, mode: str) -> dict[str, str | None]:
    if mode == "query":
        text = hit.query.get("CMCD", "")
        keys = [kv.split("=", 1)[0] for kv in text.split(",")]
        assert keys == sorted(keys), text                 # alphabetical, as CTA-5004 asks
    else:
        text = ",".join(v for k, v in sorted(hit.headers.items()) if k.startswith("CMCD-"))
    pairs = [kv.split("=", 1) for kv in text.split(",") if kv]
    return {kv[0]: kv[1] if len(kv) > 1 else None for kv in pairs}


@pytest.mark.parametrize("mode", ["query", "headers"])
async def test_players_send_cmcd(mode: str) -> None:
    vod = Vod(delay={45: 2.0})             # > 31 media s / speed 20: its buffer runs dry
    stats = await play(vod, cmcd=mode, watch_s=60.0)
    assert stats.errors == {} and stats.stall_s > 0
    master, media = (_cmcd(h, mode) for h in vod.hits[:2])
    sid = master["sid"]
    assert sid is not None and sid.startswith('"') and master["ot"] == "m"
    assert "su" in master and master["sf"] == "h" and master["pr"] == "20"
    assert media["ot"] == "m" and media["sid"] == sid
    segments = [(_cmcd(h, mode), h.query) for h in vod.segments()]
    for data, query in segments:
        assert data["sid"] == sid and query["sid"] == sid.strip('"')   # its own session id
        assert (data["ot"], data["br"], data["tb"], data["d"], data["st"]) == (
            "av", "16000", "16000", "1000", "v")
        assert data["bl"] is not None and int(data["bl"]) % 100 == 0
    assert "su" in segments[0][0] and segments[0][0]["bl"] == "0"      # starting up
    playing = [data for data, _ in segments[35:] if "su" not in data]  # then playing
    assert playing and all(int(data["bl"] or 0) > 0 for data in playing)
    # the request after the held-back segment reports that the buffer ran dry
    starved = [n for n, (data, _) in enumerate(segments) if "bs" in data]
    assert 46 in starved


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_each_viewer_holds_one_connection_spread_over_source_addresses(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=log)) as srv:
        rc = command.run(args_for("--target", srv.url, "--views", "100000", "--peak", "6000",
                                  "--scale", "0.05", "--speed", "30", "--window", "9.6-9.62",
                                  "--loop", "--source-addresses", "3", "--report", str(tmp_path)))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == 0 and report["connections"] == "per-viewer"
    assert report["source_addresses"] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    viewers = log.peers[3:]                  # after the probe's three requests
    by_sid: dict[str, set[tuple[str, int]]] = defaultdict(set)
    by_peer: dict[tuple[str, int], set[str]] = defaultdict(set)
    for sid, peer in viewers:
        if sid is not None:
            by_sid[sid].add(peer)
            by_peer[peer].add(sid)
    assert len(by_sid) >= 0.98 * report["viewers_started"]
    assert all(len(peers) == 1 for peers in by_sid.values())      # one connection a viewer
    assert all(len(sids) == 1 for sids in by_peer.values())       # and nobody else's
    assert {addr for _, (addr, _) in viewers} == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}


def test_a_shared_pool_stays_available(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=log)) as srv:
        rc = command.run(args_for("--target", srv.url, "--views", "100000", "--peak", "6000",
                                  "--scale", "0.05", "--speed", "30", "--window", "9.6-9.61",
                                  "--loop", "--connections", "4", "--report", str(tmp_path)))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == 0 and report["connections"] == 4
    assert report["viewers_started"] > 100
    assert len({peer for _, peer in log.peers[3:]}) <= 4


def test_the_truth_follows_a_play_out_rule(tmp_path: Path) -> None:
    """A target that reports time_scale counts by play-out; the truth does too and agrees with
    its /metrics, while the viewers actually watching show the rule's overcount beside it.

    The replay starts at the release, so every viewer fetched its whole buffer from the target
    (a window opening later starts with viewers whose earlier buffer no server saw)."""
    log = ServerLog()
    app = build_app(rewrite=True, metrics=True, idle=1.5, log=log, time_scale=SPEED)
    with ThreadServer(app) as srv:
        rc = command.run(args_for("--target", srv.url, "--scale", "0.05", "--speed", f"{SPEED:g}",
                                  "--window", "0-0.05", "--loop", "--seed", "5",
                                  "--report", str(tmp_path)))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counting_rule"] == "play-out" and report["time_scale"] == SPEED
    assert report["errors"] == 0 and report["viewers_started"] >= 100
    assert report["server_peak"] is not None
    assert 0 < report["watching_peak"] <= report["viewers_started"]
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    assert list(rows[0])[:5] == ["time", "target", "achieved", "server", "watching"]
    # the audience grows all along (the release): compare the counts sampled at one instant
    assert len(rows) >= 5
    for r in rows:
        achieved, server = float(r["achieved"]), float(r["server"])
        assert abs(server - achieved) <= 0.03 * achieved + 2, r
    # the rule counts each viewer from its first segment (before its first frame) and each
    # leaver for its unwatched buffer and the idle timeout besides
    assert all(float(r["achieved"]) >= float(r["watching"]) for r in rows)
    assert sum(float(r["achieved"]) for r in rows) > sum(float(r["watching"]) for r in rows)


def _refusal(srv: ThreadServer, tmp_path: Path, *extra: str) -> str:
    with pytest.raises(UsageError) as err:
        command.run(args_for("--target", srv.url, "--scale", "1", "--window", "9.7-9.71",
                             "--report", str(tmp_path), *extra))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_plans_the_machine_cannot_hold_are_refused(tmp_path: Path) -> None:
    """60,000 viewers: one process may not hold their connections, one source address has not
    the ports, and at speed 1 they would fetch more bytes a second than one replayer receives."""
    with ThreadServer(build_app(rewrite=False, metrics=False, idle=30, log=ServerLog())) as srv:
        assert "use --workers 4 or more" in _refusal(srv, tmp_path)
        assert "--source-addresses 6" in _refusal(srv, tmp_path, "--workers", "4")
        assert "MB/s of segments" in _refusal(srv, tmp_path, "--workers", "4",
                                          "--source-addresses", "6", "--speed", "60")


def test_the_descriptor_limit_is_raised_where_it_may_be() -> None:
    code = ("import resource; from edge360.replay.limits import raise_nofile; "
            "got = raise_nofile(3000); print(got.soft, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[0], got.hard)")
    hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ}, preexec_fn=lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_NOFILE, (1024, hard)))
    soft, now, _ = (int(x) for x in done.stdout.split())
    assert soft == now == 3000


def test_cmcd_and_profile_flags_are_checked(tmp_path: Path) -> None:
    for argv in (["--cmcd", "json"], ["--player-profile", "vlc"]):
        with pytest.raises(SystemExit):
            args_for("--target", "http://127.0.0.1:1/m.m3u8", *argv)
    with pytest.raises(UsageError, match="does not go with --connections"):
        command.run(args_for("--target", "http://127.0.0.1:1/m.m3u8", "--connections", "8",
                             "--source-addresses", "2", "--report", str(tmp_path)))
    assert parse_qs("CMCD=a")["CMCD"] == ["a"]


async def test_a_silence_the_rule_does_not_cover_is_counted_as_a_second_view() -> None:
    """The target ends a count when a viewer asks nothing for longer than its rule covers (here
    the request rule's 1 s idle timeout; a buffer the target never served, as a viewer already
    watching when the window opened holds, does the same under play-out) and counts a new view
    when it next fetches media: the truth keeps the closed interval and starts a new run."""
    vod = Vod(delay={35: 1.6})          # the answer to segment 35 takes 1.6 s: nothing is asked
    stats = await play(vod)
    assert stats.errors == {} and len(stats.records) == 1
    record = stats.records[0]
    sent = [h.at for h in vod.hits]
    s35 = next(h.at for h in vod.hits if h.path == "s35.ts")
    after = min(t for t in sent if t > s35)
    assert after - s35 >= 1.6 - 0.05
    assert len(record.earlier) == 1
    first, end = record.earlier[0]
    # closed at the last request before the silence plus the idle timeout; the new run opens at
    # the next segment (the player's clock and the server's differ by the loopback's latency)
    assert end == pytest.approx(s35 + 1.0, abs=0.05)
    assert record.first_segment is not None
    assert record.first_segment == pytest.approx(after, abs=0.05)
    assert first < s35 < end < record.first_segment
    intervals = truth.counted(stats.records, Rule(1.0, None))
    assert len(intervals) == 2 and truth.with_media(stats.records) == 1
    assert stats.counting == 0          # left: neither run still counts
