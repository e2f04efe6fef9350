"""The node owns its address, with real processes: a second node on a served address exits 2
with one line whatever --workers either has; workers die with a SIGKILLed supervisor, so the next
node gets the port whole; and `serve --takeover` replaces a running node while a client loop sees
no refused connection and the old node's in-flight download finishes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.fixtures.procs import running, wait_workers
from tests.fixtures.servers import REPO, ServerProcess, start_process
from tests.fixtures.titles import add_files
from tests.test_drain import BIG, slow_download


def port_of(sp: ServerProcess) -> int:
    port = urlsplit(sp.base).port
    assert port is not None
    return port


def serve_once(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`edge360 serve ...` expected to refuse: its exit status and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    return subprocess.run([sys.executable, "-m", "edge360", "serve", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # never a ready line
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


async def stats(base: str) -> dict[str, object]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.get(base + "/api/stats") as r:
        assert r.status == 200
        data = orjson.loads(await r.read())
        assert isinstance(data, dict)
        return data


async def test_a_served_address_refuses_a_second_node(tiny_media: Path) -> None:
    for first in ("1", "2"):
        sp = start_process(["serve", "--port", "0", "--workers", first, "--media",
                            str(tiny_media)])
        try:
            port = port_of(sp)
            for second in ("1", "2"):
                done = serve_once(["--port", str(port), "--workers", second,
                                   "--media", str(tiny_media)])
                assert_one_line_refusal(done, f"already served by edge360 (pid {sp.proc.pid})")
            # the first node still serves its port alone, every worker of it
            for _ in range(6):
                assert (await stats(sp.base))["workers"] == int(first)
        finally:
            assert sp.stop() == 0
        assert "Traceback" not in sp.stderr


def test_an_address_another_program_listens_on_is_refused(tiny_media: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for workers in ("1", "2"):
            done = serve_once(["--port", str(port), "--workers", workers,
                               "--media", str(tiny_media)])
            assert_one_line_refusal(done, f"127.0.0.1:{port} is already in use by another program")
    done = serve_once(["--port", "0", "--takeover", "--media", str(tiny_media)])
    assert_one_line_refusal(done, "--takeover needs the --port")


async def test_workers_die_with_their_supervisor(tiny_media: Path) -> None:
    sp = start_process(["serve", "--port", "0", "--workers", "2", "--media", str(tiny_media)])
    port = port_of(sp)
    workers = wait_workers(sp.proc.pid, 2)
    try:
        os.kill(sp.proc.pid, signal.SIGKILL)
        sp.proc.wait(10)
        for _ in range(100):  # bounded: the kernel kills them as the supervisor goes
            if not any(running(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(running(pid) for pid in workers), "a worker outlived its supervisor"
    finally:
        for pid in workers:  # never leave one behind, even when the test fails
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        sp.stop()
    # the address is free and whole: the next node gets it, and nothing else answers there
    nxt = start_process(["serve", "--port", str(port), "--workers", "2", "--media",
                         str(tiny_media)])
    try:
        fresh = wait_workers(nxt.proc.pid, 2)
        assert not fresh & workers
        for _ in range(6):
            assert (await stats(nxt.base))["workers"] == 2
    finally:
        assert nxt.stop() == 0


async def hammer(port: int, path: str, size: int, stop: asyncio.Event, ok: list[int],
                 errors: list[str], limit: int = 5000) -> None:
    """One new connection per request until `stop` (at most `limit`): successes in ok[0]."""
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    for _ in range(limit):
        if stop.is_set():
            return
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            data = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200") and len(body) == size:
                ok[0] += 1
            else:
                errors.append(repr(head[:80]))
        except (OSError, TimeoutError) as e:
            errors.append(repr(e))
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(("old_workers", "new_workers"), [("1", "1"), ("2", "2"), ("1", "2"),
                                                          ("2", "1")])
async def test_takeover_refuses_no_connection(tiny_media: Path, old_workers: str,
                                              new_workers: str) -> None:
    add_files(tiny_media / "tiny", {"v0/big.ts": os.urandom(BIG)})
    segment = tiny_media / "tiny" / "v0" / "seg_000.ts"
    env = {"EDGE360_SERVER_DRAIN_TIMEOUT": "30"}
    old = start_process(["serve", "--port", "0", "--workers", old_workers,
                         "--media", str(tiny_media)], env)
    port = port_of(old)
    new: ServerProcess | None = None
    stop, ok, errors = asyncio.Event(), [0], []
    client = asyncio.create_task(hammer(port, "/tiny/v0/seg_000.ts", segment.stat().st_size,
                                        stop, ok, errors))
    try:
        started = asyncio.Event()
        download = asyncio.create_task(slow_download(old.base, "/tiny/v0/big.ts", started))
        await asyncio.wait_for(started.wait(), 10)
        for _ in range(200):  # the loop runs against the old node first (bounded)
            if ok[0] >= 10:
                break
            await asyncio.sleep(0.05)
        before = ok[0]
        new = await asyncio.to_thread(
            start_process, ["serve", "--port", str(port), "--workers", new_workers,
                            "--takeover", "--media", str(tiny_media)], env)
        assert await asyncio.to_thread(old.proc.wait, 60) == 0  # drained and gone
        after = ok[0]
        for _ in range(200):  # the loop goes on against the new node alone (bounded)
            if ok[0] >= after + 30:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(client, 30)
        assert errors == []
        assert before >= 10 and ok[0] >= after + 30
        # the old node's in-flight response finished whole during its drain
        assert await asyncio.wait_for(download, 60) == BIG
        expected = max(int(old_workers), int(new_workers))
        for _ in range(4):
            assert (await stats(new.base))["workers"] == expected
    finally:
        stop.set()
        await asyncio.gather(client, return_exceptions=True)
        old.stop()
        code = new.stop() if new is not None else None
    assert code == 0
    assert f"handed over to pid {new.proc.pid}; draining" in old.stderr
    assert f"took over 127.0.0.1:{port} from pid {old.proc.pid}, which drains" in new.stderr
    for err in (old.stderr, new.stderr):
        assert "Traceback" not in err


async def test_takeover_carries_the_sessions_over(tiny_media: Path, tmp_path: Path) -> None:
    """With sessions.state_file the old node writes its sessions as the takeover begins and the
    new node starts from them: the same viewers, the same views, nobody counted twice."""
    from tests.test_workers import play
    env = {"EDGE360_SESSIONS_STATE_FILE": str(tmp_path / "sessions.json")}
    args = ["serve", "--workers", "2", "--media", str(tiny_media)]
    old = start_process([*args, "--port", "0"], env)
    new: ServerProcess | None = None
    try:
        await asyncio.gather(*(play(old.base, f"moving-{i:03d}") for i in range(5)))
        assert (await stats(old.base))["views_total"] == 5
        new = await asyncio.to_thread(
            start_process, [*args, "--port", str(port_of(old)), "--takeover"], env)
        assert await asyncio.to_thread(old.proc.wait, 60) == 0
        got = await stats(new.base)
        assert (got["sessions_active"], got["views_total"], got["sessions_peak"]) == (5, 5, 5)
        await play(new.base, "moving-000")  # a viewer who carries on is the same session
        assert (await stats(new.base))["views_total"] == 5
    finally:
        old.stop()
        code = new.stop() if new is not None else None
    assert code == 0
