"""A compressed replay holds its pace: speed 60 (a 6 s segment is 0.1 s of real time) against
nginx serving the bundled demo, or a clear refusal of a plan whose bytes the replayer cannot
receive at that speed.

Viewers leave at their arrival plus their watch time, so the audience follows the model however
late a fetch comes, and the hls.js buffer (the demo's top rendition: 300 s, 5 real seconds at
speed 60) rides out a slow answer. The scale is small so the test stays short on a shared machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge360.core.errors import UsageError
from edge360.replay import command
from edge360.replay.runner import pacing
from edge360.replay.stats import Stats
from edge360.replay.truth import Rule
from tests.fixtures.servers import DEMO, free_port
from tests.fixtures.tools import require_tool

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}
    sendfile on;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@pytest.fixture
def demo_on_nginx(tmp_path: Path) -> Iterator[str]:
    binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else require_tool("nginx")
    port = free_port()
    work = tmp_path / "nginx"
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port, root=DEMO))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/demo/master.m3u8"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_speed_60_holds_its_pace_against_nginx(demo_on_nginx: str, tmp_path: Path) -> None:
    rc = command.run(args_for("--target", demo_on_nginx, "--speed", "60", "--scale", "0.0004",
                              "--window", "9.6-9.68", "--loop", "--seed", "3",
                              "--report", str(tmp_path)))
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["viewers_started"] >= 20 and report["requests"] > 20 * 10
    assert report["stall_ratio"] is not None and report["stall_ratio"] < 0.01
    assert report["segment_real_s"] == pytest.approx(0.1)
    assert {"pacing_late_p50_s", "pacing_late_p99_s", "pacing_lost", "pacing_note"} <= set(report)
    # the audience follows the model: the viewers watching do not drift from where they began
    rows = list(csv.DictReader((tmp_path / "series.csv").read_text().splitlines()))
    watching = [float(r["watching"]) for r in rows if r["watching"] and float(r["watching"])]
    target = report["target_peak"]
    assert len(watching) >= 4
    assert abs(watching[-1] - watching[0]) <= 0.15 * target + 2, watching


def test_a_speed_whose_bytes_it_cannot_receive_is_refused(demo_on_nginx: str,
                                                           tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        command.run(args_for("--target", demo_on_nginx, "--speed", "60", "--scale", "0.002",
                             "--window", "9.6-9.77", "--loop", "--report", str(tmp_path)))
    message = str(err.value)
    assert "MB/s of segments" in message and "use --speed" in message and "\n" not in message


def test_a_burst_of_lateness_loses_the_pace_though_the_p99_is_kept() -> None:
    """Two hundred wakes on time and one 10 s late (a replayer loop that fell behind while
    thousands joined): the p99 hides it, the worst does not."""
    stats = Stats(rule=Rule(30, None))
    for _ in range(200):
        stats.late(0.001)
    kept = pacing(1.0, 6.0, stats, 0.0)
    assert not kept["pacing_lost"] and kept["pacing_note"] == "kept"
    stats.late(10.0)
    lost = pacing(1.0, 6.0, stats, 0.0)
    assert lost["pacing_late_p99_s"] < 0.01 and lost["pacing_late_max_s"] == 10.0
    assert lost["pacing_lost"] and "10.0 s late (worst)" in lost["pacing_note"]
    # and a worker's worst survives the merge into the parent's figures
    parent = Stats(rule=Rule(30, None))
    parent.merge(stats.to_wire())
    assert parent.late_max == 10.0
