"""Live replays against a real HLS server on 127.0.0.1:0, and the command line's refusals."""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from edge360.core.errors import UsageError
from edge360.replay import command
from edge360.replay.player import parse_media, sid_of
from edge360.replay.target import parse_sessions_active
from tests.fixtures.hls_server import SEGMENT_BYTES, ServerLog, ThreadServer, build_app
from tests.fixtures.servers import start_process
from tests.fixtures.titles import Rendition, make_title


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_live_replay_of_a_peak_slice(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=log)) as srv:
        rc = command.run(args_for("--target", srv.url, "--scale", "0.01", "--speed", "20",
                                  "--window", "9.5-9.55", "--loop", "--seed", "2",
                                  "--report", str(tmp_path), "--duration", "60"))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for f in ("report.json", "series.csv", "report.png", "report.html"):
        assert (tmp_path / f).stat().st_size > 0
    assert report["viewers_started"] >= 500
    assert report["requests"] > 0 and report["errors"] == 0
    assert report["achieved_peak"] > 0
    assert report["server_peak"] is not None and report["server_peak"] > 0
    assert report["window"] == [9.5, 9.55] and report["speed"] == 20.0
    # sessions end during the run: some viewers' last request is well before the window's end
    end = max(log.last_seen.values())
    assert sum(1 for t in log.last_seen.values() if t < end - 1.0) > 0
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    assert len(rows) >= 3 and max(float(r["server"] or 0) for r in rows) > 0
    # the requests so far grow to the report's total, with no error on the way
    counts = [int(r["requests"]) for r in rows]
    assert counts == sorted(counts) and 0 < counts[-1] <= report["requests"]
    assert {r["errors"] for r in rows} == {"0"}
    # every request after the master carried the sid the server handed out
    later = [(p, s) for p, s, _ in log.requests if p != "t/master.m3u8"]
    assert later and all(s is not None and s in log.last_seen for _, s in later)
    # a response cut off at the window's end may reach the server but not the replayer
    assert 0 <= len(log.last_seen) - report["viewers_started"] <= 0.01 * len(log.last_seen)


def test_own_sid_and_byte_ranges_against_a_plain_server(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=False, metrics=False, idle=30, log=log)) as srv:
        rc = command.run(args_for("--target", srv.url, "--views", "100000", "--peak", "6000",
                                  "--scale", "0.05", "--speed", "30", "--window", "9.6-9.62",
                                  "--report", str(tmp_path), "--seed", "4"))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["server_peak"] is None            # the target has no /metrics
    assert report["idle_timeout"] == 30
    assert report["errors"] == 0 and report["requests"] > 0
    # (the replayer's probe read the master, one media playlist and its first segment's size)
    later = [(p, s, r) for p, s, r in log.requests[3:] if p.startswith("t/") and "master" not in p]
    assert all(s is not None and sid_of(f"x?sid={s}") == s for _, s, _ in later)
    ranged = [r for p, _, r in later if p == "t/hi/all.ts"]
    assert ranged and all(r is not None and r.startswith("bytes=") for r in ranged)
    starts = {int(r.split("=")[1].split("-")[0]) for r in ranged if r}
    assert starts <= {i * SEGMENT_BYTES for i in range(10)}


def test_workers_split_the_viewers_and_merge(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=log)) as srv:
        rc = command.run(args_for("--target", srv.url, "--views", "100000", "--peak", "6000",
                                  "--scale", "0.05", "--speed", "30", "--window", "9.6-9.62",
                                  "--workers", "2", "--loop", "--report", str(tmp_path)))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    # both workers' viewers are merged; one arriving just before the window's end may get no answer
    assert 0.98 * report["total_viewers_sampled"] <= report["viewers_started"]
    started = len(log.last_seen) - 1                             # - the probe's master request
    assert report["viewers_started"] <= started <= report["total_viewers_sampled"]
    # the probe read the master, one media playlist and its first segment's size
    assert report["errors"] == 0 and report["requests"] >= len(log.requests) - 3
    assert report["workers"] == 2 and report["achieved_peak"] > 0


def test_shard_takes_its_share(tmp_path: Path) -> None:
    log = ServerLog()
    with ThreadServer(build_app(rewrite=True, metrics=False, idle=0.5, log=log)) as srv:
        command.run(args_for("--target", srv.url, "--views", "100000", "--peak", "6000",
                             "--scale", "0.05", "--speed", "30", "--window", "9.6-9.62",
                             "--shard", "1/3", "--report", str(tmp_path)))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["shard"] == "1/3"
    share = report["views"] + report["viewers_at_start"]
    assert abs(share - report["total_viewers_sampled"] / 3) <= 1
    assert 0.98 * share <= len(log.last_seen) - 1 <= share          # - the probe's master request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("argv", "needle"), [
    (["--window", "5-3"], "--window"), (["--window", "0-25"], "--window"),
    (["--window", "x"], "--window"), (["--scale", "0"], "--scale"), (["--scale", "1.5"], "--scale"),
    (["--speed", "0"], "--speed"), (["--shard", "3/3"], "--shard"), (["--shard", "a"], "--shard"),
    (["--peak", "900000", "--model"], "infeasible"), ([], "--target"),
])
def test_bad_flags_are_one_line_usage_errors(argv: list[str], needle: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        command.run(args_for(*argv, "--report", str(tmp_path)))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unreachable_and_non_master_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unreachable"):
        command.run(args_for("--target", f"http://127.0.0.1:{_free_port()}/t/master.m3u8",
                             "--report", str(tmp_path)))
    with ThreadServer(build_app(rewrite=False, metrics=False, idle=1, log=ServerLog())) as srv:
        media = srv.url.replace("master.m3u8", "lo/index.m3u8")
        with pytest.raises(UsageError, match="not a master playlist"):
            command.run(args_for("--target", media, "--report", str(tmp_path)))
        with pytest.raises(UsageError, match="HTTP 404"):
            command.run(args_for("--target", srv.url + "x", "--report", str(tmp_path)))


def test_playlist_parsing_and_metrics_sum() -> None:
    text = ("#EXTM3U\n#EXTINF:4,\n#EXT-X-BYTERANGE:100@50\nf.ts\n#EXTINF:4,\n"
            "#EXT-X-BYTERANGE:30\nf.ts\n#EXTINF:2.5,\ng.ts?sid=abcdefgh1\n#EXT-X-ENDLIST\n")
    pl = parse_media(text, "http://h/t/lo/index.m3u8")
    assert [s.byterange for s in pl.segments] == [(50, 149), (150, 179), None]
    assert pl.segments[2].url == "http://h/t/lo/g.ts?sid=abcdefgh1" and pl.ended
    assert sid_of(pl.segments[2].url) == "abcdefgh1" and sid_of("a?sid=bad!") is None
    assert parse_qs("sid=x")["sid"] == ["x"]
    metrics = ('edge360_sessions_active{title="a",rendition="x"} 3\n'
               'edge360_sessions_active{title="b",rendition="none"} 4\nother_total 9\n')
    assert parse_sessions_active(metrics) == 7
    assert parse_sessions_active("other_total 9\n") is None


def test_long_playlists_compressed_by_edge360_still_play(tmp_path: Path) -> None:
    """edge360 gzips rewritten playlists of 1 KiB or more (a two-hour playlist is ~1,200
    entries); the virtual players decode them and keep fetching segments."""
    media = tmp_path / "media"
    # one small file listed 200 times: a two-hour playlist's length, not its bytes
    make_title(media, "long", [Rendition("v0", 200, 376, growth=0, duration=6.0,
                                         bandwidth=100_000, segment="seg.ts")], byteranges=None)
    origin = start_process(["serve", "--port", "0", "--media", str(media)],
                           {"EDGE360_SESSIONS_IDLE_TIMEOUT": "0.5"})
    try:
        rc = command.run(args_for("--target", origin.base + "/long/master.m3u8",
                                  "--scale", "0.001", "--speed", "60", "--window", "9.5-9.52",
                                  "--seed", "3", "--report", str(tmp_path / "r"),
                                  "--duration", "30"))
    finally:
        assert origin.stop() == 0
    assert rc == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["errors"] == 0, report["errors_by_kind"]
    # master + media playlist + a start-up burst of segments per viewer at the least
    assert report["requests"] >= 4 * report["viewers_started"] > 0


def test_ctrl_c_stops_cleanly_and_still_writes_the_report(tmp_path: Path) -> None:
    with ThreadServer(build_app(rewrite=True, metrics=True, idle=0.5, log=ServerLog())) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge360", "replay", "--target", srv.url, "--scale", "0.01",
             "--speed", "20", "--window", "9.5-10", "--loop", "--seed", "4",
             "--report", str(tmp_path), "--duration", "120"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        try:
            deadline = time.monotonic() + 60
            seen = ""
            while "req/s" not in seen and time.monotonic() < deadline:  # the progress line
                ready, _, _ = select.select([proc.stderr], [], [], 0.5)
                if ready:
                    seen += proc.stderr.readline()
            assert "req/s" in seen, seen
            os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["requests"] > 0 and report["viewers_started"] > 0
    assert (tmp_path / "series.csv").stat().st_size > 0
