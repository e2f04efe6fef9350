"""http.send.Direct: an answer's bytes written straight to a plain socket whose reader is slower
than the writer. Every byte arrives once and in order across memory parts and file spans, the
socket's writability is watched on one duplicate descriptor per answer, the watch drops itself
when it fires with nobody waiting, and nothing is left open afterwards."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from edge360.http.response import FileSpan
from edge360.http.send import FIRST, Direct, write_parts


class Plain:
    """A connection's side of a real socket pair, as http.send sees a plain connection."""

    def __init__(self, transport: asyncio.Transport, sock: socket.socket) -> None:
        self.transport = transport
        self.sock = sock

    async def writable(self) -> None:
        return None

    async def drained(self) -> None:
        # nothing here writes through the transport: its buffer is always empty
        assert not self.transport.get_write_buffer_size()


def slow_reader(sock: socket.socket, into: bytearray, expected: int) -> threading.Thread:
    def run() -> None:
        while len(into) < expected:
            chunk = sock.recv(65536)
            if not chunk:
                return
            into.extend(chunk)
            time.sleep(0.0005)  # slower than the writer: the writer finds the socket full
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def connected() -> tuple[Plain, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    return Plain(transport, ours), theirs


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def parts_arrive_whole_and_in_order(tmp_path: Path) -> None:
    rng = os.urandom
    first, middle, last = rng(3 * 1024 * 1024 + 17), rng(700_001), rng(2 * 1024 * 1024 + 5)
    path = tmp_path / "piece"
    path.write_bytes(b"x" * 11 + middle + b"y" * 13)
    conn, peer = await connected()
    fd = os.open(path, os.O_RDONLY)
    before = open_fds()
    got = bytearray()
    total = len(first) + len(middle) + len(last)
    reader = slow_reader(peer, got, total)
    try:
        sent = await write_parts(conn, [first, FileSpan(fd, 11, len(middle)),
                                        memoryview(last)])
    finally:
        os.close(fd)
    await asyncio.to_thread(reader.join, 30)
    assert sent == total and bytes(got) == first + middle + last
    assert open_fds() == before - 1  # the span's file; no duplicate left behind
    conn.transport.close()
    peer.close()


async def the_watch_is_kept_and_dropped(tmp_path: Path) -> None:
    conn, peer = await connected()
    out = Direct(conn, conn.sock)
    data = os.urandom(4 * 1024 * 1024)
    got = bytearray()
    reader = slow_reader(peer, got, 2 * len(data))
    try:
        await out.start()
        await out.write(memoryview(data))
        assert out.watching  # it waited, and watches on for the answer's next bytes
        for _ in range(200):  # the socket drains; the watch fires with nobody waiting
            await asyncio.sleep(0.005)
            if not out.watching:
                break
        assert not out.watching
        await out.write(memoryview(data))  # and is made again for the next wait
    finally:
        out.close()
    await asyncio.to_thread(reader.join, 30)
    assert bytes(got) == data + data and not out.watching
    conn.transport.close()
    peer.close()


async def a_connection_closed_at_the_yield_gets_nothing_more(tmp_path: Path) -> None:
    """After an answer's first bytes the writer lets the others go; a connection closed
    meanwhile is never written to again (its descriptor may be reused by then)."""
    conn, peer = await connected()
    out = Direct(conn, conn.sock)
    asyncio.get_running_loop().call_soon(conn.transport.close)  # runs at the writer's yield
    try:
        await out.start()
        with pytest.raises(ConnectionResetError):  # bounded: a writer that missed it hangs
            await asyncio.wait_for(out.write(memoryview(os.urandom(FIRST * 4))), 5)
    finally:
        out.close()
    got = bytearray()
    await asyncio.to_thread(slow_reader(peer, got, FIRST * 4).join, 10)
    assert len(got) == FIRST  # the first bytes, and nothing after the close
    peer.close()


Runner = Callable[[Coroutine[Any, Any, None]], None]
#: both loops edge360 may run on (uvloop in `edge360 serve`)
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@LOOPS
def test_parts_arrive_whole_and_in_order_through_a_full_socket(run: Runner,
                                                               tmp_path: Path) -> None:
    run(parts_arrive_whole_and_in_order(tmp_path))


@LOOPS
def test_the_watch_is_kept_between_waits_and_dropped_when_nobody_waits(run: Runner,
                                                                       tmp_path: Path) -> None:
    run(the_watch_is_kept_and_dropped(tmp_path))


@LOOPS
def test_a_connection_closed_while_others_write_gets_nothing_more(run: Runner,
                                                                  tmp_path: Path) -> None:
    run(a_connection_closed_at_the_yield_gets_nothing_more(tmp_path))
