"""The command line as a user meets it: help, version, check-config, serve's ready line, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.fixtures.servers import REPO, start_process


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The command in a bare environment (no EDGE360_*), but with the PYTHONPATH that chose the
    code under test, so it runs the same edge360 as the test does."""
    env = {"PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "edge360", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def test_help_and_version() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("serve", "check-config", "replay", "sign", "package"):
        assert command in out.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("edge360 ")


def test_check_config_prints_resolved_values() -> None:
    out = run("check-config", "config/edge.toml")
    assert out.returncode == 0, out.stderr
    assert 'role = "edge"' in out.stdout and "[sessions]" in out.stdout


@pytest.mark.parametrize(("text", "needle"), [
    ("[server]\nport = 'eighty'\n",
     "config: server.port: expected an integer 0-65535, got 'eighty'"),
    ("[server]\nbogus = 1\n", "config: server.bogus: unknown key"),
    ("[[broken", "not valid TOML"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    out = run("check-config", str(p))
    assert out.returncode == 2
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [
    ["serve", "--port", "eighty"],
    ["serve", "--media", "/definitely/not/here"],
    ["serve", "--role", "edge"],
    ["serve", "--role", "bishop"],
    ["check-config", "/no/such/file.toml"],
    ["serve", "--upstream", "ftp://x", "--role", "edge"],
    ["nonsense"],
])
def test_bad_flags_are_one_line_and_exit_2(args: list[str]) -> None:
    out = run(*args)
    assert out.returncode == 2, out
    assert out.stderr.strip() and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_port_zero_ready_line_and_clean_exit(sig: int) -> None:
    sp = start_process(["serve", "--port", "0"])
    try:
        assert sp.ready.startswith("edge360 origin ready http://127.0.0.1:")
        assert not sp.base.endswith(":0")
        # run from the repository, the bundled demo is served and its master URL is named
        assert sp.ready.endswith("/demo/master.m3u8")
        with urllib.request.urlopen(sp.base + "/healthz", timeout=10) as r:
            assert r.status == 200
            assert orjson.loads(r.read())["status"] == "ok"
    finally:
        code = sp.stop(sig)
    assert code == 0


def test_access_log_is_one_json_line_per_request(tmp_path: Path) -> None:
    sp = start_process(["serve", "--port", "0", "--access-log"])
    try:
        for path in ("/healthz", "/demo/master.m3u8?token=secret-value", "/nope.m3u8"):
            try:
                urllib.request.urlopen(sp.base + path, timeout=10).read()
            except urllib.error.HTTPError:
                pass
    finally:
        assert sp.stop() == 0
    lines = [orjson.loads(line) for line in sp.stderr.splitlines()
             if line.startswith("{")]
    paths = [entry["path"] for entry in lines]
    assert paths == ["/healthz", "/demo/master.m3u8", "/nope.m3u8"]
    assert [entry["status"] for entry in lines] == [200, 200, 404]
    assert "secret-value" not in str(lines)


def test_access_log_never_blocks_serving_when_stderr_stalls() -> None:
    """Nobody reads the server's stderr here (a log shipper that fell behind): the pipe fills
    after 64 KiB, yet every request is answered; lines past the bounded buffer are dropped and
    counted, and what was kept comes out whole once the pipe is read again."""
    import http.client
    sp = start_process(["serve", "--port", "0", "--access-log"])
    try:
        host, port = sp.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        agent = "player/" + "x" * 3000  # ~3.2 KB a line: 1,600 lines pass the 4 MiB bound
        statuses = set()
        for i in range(1600):
            path = "/demo/master.m3u8?sid=viewer0001" if i % 2 else "/demo/h264_360p/seg_00000.m4s"
            conn.request("GET", path, headers={"User-Agent": agent})
            response = conn.getresponse()
            response.read()
            statuses.add(response.status)
        assert statuses == {200}
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        dropped = next(float(line.split()[1]) for line in metrics.splitlines()
                       if line.startswith("edge360_access_log_dropped_total "))
        assert dropped > 0
        conn.close()
    finally:
        assert sp.stop() == 0
    lines = [orjson.loads(line) for line in sp.stderr.splitlines() if line.startswith("{")]
    assert 1000 < len(lines) < 1600 and len(lines) + dropped >= 1600
    assert {entry["status"] for entry in lines} == {200}
