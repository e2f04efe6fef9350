"""The send watchdog (http.timers.SendWatchdog) over a real TCP connection on loopback: it cuts a
reader that stopped reading, keeps looking while an answer is in progress, and stops looking (no
timer left) once nothing is pending, so an idle keep-alive connection costs nothing."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from edge360.http.timers import SendWatchdog


class Sink(asyncio.Protocol):
    """The server side of the pair: holds its transport, never reads more than it must."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)
        self.transport.set_write_buffer_limits(high=0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def pair(*, window: int | None = None) -> tuple[Sink, socket.socket]:
    """A TCP connection on loopback: its server side as a Sink, its client as a socket (with a
    receive buffer of `window` bytes if given)."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    if window is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    client.setblocking(False)
    with listener:
        await loop.sock_connect(client, listener.getsockname())
        server_sock, _ = listener.accept()
    _, sink = await loop.connect_accepted_socket(Sink, server_sock)
    return sink, client


async def test_an_idle_connection_is_not_looked_at_again() -> None:
    loop = asyncio.get_running_loop()
    sink, client = await pair()
    assert sink.transport is not None
    dog = SendWatchdog(loop, sink.transport, lambda: 0.2, lambda: False)
    dog.watch()
    await asyncio.sleep(0.3)                 # one look: nothing pending, not busy
    assert not dog.watching
    assert not sink.transport.is_closing()
    client.close()


async def test_a_busy_connection_stays_watched_and_a_stalled_reader_is_cut() -> None:
    loop = asyncio.get_running_loop()
    sink, client = await pair(window=4096)
    assert sink.transport is not None
    dog = SendWatchdog(loop, sink.transport, lambda: 0.2, lambda: True)  # an answer under way
    dog.watch()
    await asyncio.sleep(0.35)                # nothing pending yet, but an answer is under way
    assert dog.watching
    sink.transport.write(b"x" * 4 * 1024 * 1024)  # more than the connection holds
    await asyncio.wait_for(sink.lost, 3)     # the reader never reads: cut off
    assert sink.transport.is_closing()
    client.close()


async def test_a_reader_that_reads_is_never_cut() -> None:
    loop = asyncio.get_running_loop()
    sink, client = await pair()
    assert sink.transport is not None
    dog = SendWatchdog(loop, sink.transport, lambda: 0.2, lambda: False)
    payload = b"y" * 2 * 1024 * 1024
    sink.transport.write(payload)
    dog.watch()
    got = 0
    while got < len(payload):                # slower than the send timeout in all, never stalled
        await asyncio.sleep(0.02)
        try:
            got += len(client.recv(65536))
        except BlockingIOError:
            pass
    assert not sink.transport.is_closing()
    await asyncio.sleep(0.5)
    assert not dog.watching
    client.close()
