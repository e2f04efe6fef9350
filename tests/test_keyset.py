"""The signing key set with real processes: with auth.required a SIGHUP that finds the keys file
emptied, garbled or unreadable logs one line and keeps the keys in use (every worker alike), a
start-up without usable keys is one line and exit 2, and without auth.required an empty set is
still allowed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge360.security import tokens as auth
from tests.fixtures.servers import REPO, ServerProcess, start_logged
from tests.test_reload import wait_log

OLD = "old:old-secret-abcdefghijkl"
NEW = "new:new-secret-mnopqrstuvwx"
REFUSED = "reload failed: config: auth.keys"


def token(keys: str) -> str:
    return auth.sign(auth.parse_keys(keys), scope="/tiny/", expires=int(time.time()) + 300)


def status(sp: ServerProcess, tok: str) -> int:
    try:
        with urllib.request.urlopen(f"{sp.base}/tiny/v0/seg_000.ts?token={tok}",
                                    timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("workers", ["1", "2"])
def test_reload_keeps_the_keys_when_the_new_set_is_refused(tiny_media: Path, tmp_path: Path,
                                                          workers: str) -> None:
    keys_file, log = tmp_path / "keys", tmp_path / "node.log"
    keys_file.write_text(OLD + "\n")
    sp = start_logged(["serve", "--media", str(tiny_media), "--port", "0", "--workers", workers],
                      {"EDGE360_AUTH_REQUIRED": "true", "EDGE360_AUTH_KEYS_FILE": str(keys_file)},
                      log)
    n = int(workers)
    try:
        assert status(sp, token(OLD)) == 200
        refusals = 0
        for bad in (b"", b"\n# rotated, nothing yet\n", b"no colon here", b"\xff\xfe\x00garbage"):
            keys_file.write_bytes(bad)
            os.kill(sp.proc.pid, signal.SIGHUP)
            refusals += n  # one line from each worker
            wait_log(log, REFUSED, refusals)
            for _ in range(4):  # whichever worker answers still has the old key
                assert status(sp, token(OLD)) == 200
        keys_file.unlink()  # a file gone is refused the same way
        os.kill(sp.proc.pid, signal.SIGHUP)
        wait_log(log, "reload failed: config: auth.keys_file", n)
        assert status(sp, token(OLD)) == 200
        # a good set still rotates
        keys_file.write_text(NEW + "\n")
        os.kill(sp.proc.pid, signal.SIGHUP)
        wait_log(log, "reloaded: 1 auth keys", n)
        for _ in range(4):
            assert (status(sp, token(OLD)), status(sp, token(NEW))) == (403, 200)
    finally:
        assert sp.stop() == 0
    text = log.read_text()
    assert "still using the 1 keys loaded before" in text
    assert "Traceback" not in text
    assert "old-secret" not in text


def test_an_empty_set_is_allowed_without_auth_required(tiny_media: Path, tmp_path: Path) -> None:
    keys_file, log = tmp_path / "keys", tmp_path / "node.log"
    keys_file.write_text(OLD + "\n")
    sp = start_logged(["serve", "--media", str(tiny_media), "--port", "0"],
                      {"EDGE360_AUTH_KEYS_FILE": str(keys_file)}, log)
    try:
        keys_file.write_text("")
        os.kill(sp.proc.pid, signal.SIGHUP)
        wait_log(log, "reloaded: 0 auth keys")
        assert status(sp, "") == 200  # tokens are not checked without auth.required
    finally:
        assert sp.stop() == 0
    assert REFUSED not in log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_starting_without_usable_keys_under_auth_required_exits_2(tiny_media: Path,
                                                                 tmp_path: Path,
                                                                 workers: str) -> None:
    keys_file = tmp_path / "keys"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    env["EDGE360_AUTH_REQUIRED"] = "true"
    cases = {"": "holds no keys", "# none yet\n": "holds no keys",
             "garbage": "entry 1 is not kid:secret"}
    for content, needle in [*cases.items(), (None, "EDGE360_AUTH_KEYS holds no keys")]:
        run_env = dict(env)
        if content is not None:
            keys_file.write_text(content)
            run_env["EDGE360_AUTH_KEYS_FILE"] = str(keys_file)
        done = subprocess.run([sys.executable, "-m", "edge360", "serve", "--port", "0",
                               "--workers", workers, "--media", str(tiny_media)],
                              cwd=REPO, env=run_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], done.stderr
