"""Handing a served address to the node that replaces it (`edge360 serve --takeover`).

The running node (the owner) listens on its claim, a Unix socket named after its address (see
run/ports.py). A node started with --takeover connects there and the two speak JSON lines:

    new -> owner   {"op": "takeover", "pid": P}
    owner -> new   {"pid": O, "serve": K, "metrics": true|false}   + K (+1) descriptors
    new -> owner   {"op": "ready"}         (its workers answer on the sockets now)
    owner -> new   {"op": "released"}      (the owner gave up its claim and drains)

The descriptors travel as SCM_RIGHTS ancillary data (unix(7)) on the owner's answer: they are the
owner's listening sockets themselves, so the kernel's accept queues and every connection waiting in
them pass to the new node and no connection is refused during the upgrade. Until it says "ready"
the new node is only a guest: if it fails or goes away, the owner keeps its claim and serves on
as before. After "released" the owner drains as on SIGTERM (server.drain_timeout), its in-flight
responses finish, and the sockets live on in the new node.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("edge360.ports")

#: a message is one JSON object on one line, never longer than this
MAX_LINE = 4096
#: a node has at most this many listening sockets (one per worker, plus monitoring)
MAX_FDS = 256
#: seconds each side waits for the other's next message; the owner waits longer for "ready",
#: which comes only once the new node's workers are up (the supervisor waits 120 s for them)
ANSWER_TIMEOUT = 10.0
READY_TIMEOUT = 150.0


class HandoverError(Exception):
    """The takeover could not be completed; the message says why, in one line."""


def _line(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\n"


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HandoverError("the other node sent something that is not JSON") from None
    if not isinstance(msg, dict):
        raise HandoverError("the other node sent something that is not a JSON object")
    return msg


# the new node's side: plain blocking sockets with timeouts (it runs before its event loop, or
# in a thread)

def _read_line(link: socket.socket, buf: bytes) -> dict[str, Any]:
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise HandoverError("the other node sent an overlong message")
        chunk = link.recv(MAX_LINE)
        if not chunk:
            raise HandoverError("the other node closed the connection")
        buf += chunk
    return _parse(buf.split(b"\n", 1)[0])


def request(link: socket.socket) -> tuple[dict[str, Any], list[socket.socket]]:
    """Ask the owner at the other end of `link` for its listening sockets: its header and them."""
    link.settimeout(ANSWER_TIMEOUT)
    try:
        link.sendall(_line({"op": "takeover", "pid": os.getpid()}))
        data, fds, flags, _ = socket.recv_fds(link, MAX_LINE, MAX_FDS)
        received = [socket.socket(fileno=fd) for fd in fds]  # owned now: closed on any failure
        try:
            if flags & socket.MSG_CTRUNC:
                raise HandoverError("the listening sockets did not all arrive")
            if not data:
                raise HandoverError("the running node closed the connection")
            header = _read_line(link, data)
            if "error" in header:
                raise HandoverError(f"the running node refused: {header['error']}")
            expected = int(header.get("serve", 0)) + (1 if header.get("metrics") else 0)
            if expected != len(received) or int(header.get("serve", 0)) < 1:
                raise HandoverError(f"expected {expected} listening sockets, got {len(received)}")
        except (HandoverError, ValueError, TypeError):
            for s in received:
                s.close()
            raise
    except TimeoutError:
        raise HandoverError(f"no answer within {ANSWER_TIMEOUT:g} s") from None
    except OSError as e:
        raise HandoverError(e.strerror or str(e)) from None
    return header, received


def confirm(link: socket.socket) -> None:
    """Tell the owner this node serves now, and wait until it has given up its claim."""
    link.settimeout(ANSWER_TIMEOUT)
    try:
        link.sendall(_line({"op": "ready"}))
        answer = _read_line(link, b"")
    except TimeoutError:
        raise HandoverError(f"no answer within {ANSWER_TIMEOUT:g} s") from None
    except OSError as e:
        raise HandoverError(e.strerror or str(e)) from None
    finally:
        link.close()
    if answer.get("op") != "released":
        raise HandoverError(f"unexpected answer {answer!r}")


# the owner's side: on the node's event loop, one takeover at a time

async def _recv_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> dict[str, Any]:
    buf = b""
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise HandoverError("overlong message")
        chunk = await loop.sock_recv(conn, MAX_LINE)
        if not chunk:
            raise HandoverError("the new node went away")
        buf += chunk
    return _parse(buf.split(b"\n", 1)[0])


async def _serve_one(loop: asyncio.AbstractEventLoop, conn: socket.socket,
                     listening: Callable[[], tuple[list[socket.socket], socket.socket | None]],
                     claim: socket.socket, where: str, before: Callable[[], None]) -> bool:
    """One connection to the claim; True when the address has been handed over."""
    try:
        msg = await asyncio.wait_for(_recv_line(loop, conn), ANSWER_TIMEOUT)
    except (TimeoutError, HandoverError, OSError):
        return False  # a node that only asked who owns the address, or a stray client
    if msg.get("op") != "takeover":
        return False
    pid = msg.get("pid")
    before()
    serve, metrics = listening()
    sockets = [*serve, *([metrics] if metrics is not None else [])]
    header = {"pid": os.getpid(), "serve": len(serve), "metrics": metrics is not None}
    try:
        fds = array.array("i", [s.fileno() for s in sockets])
        # a fresh Unix connection has an empty send buffer: this small message goes in one call
        conn.sendmsg([_line(header)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        log.info("pid %s is taking over %s: its %d listening sockets are shared with it",
                 pid, where, len(sockets))
        answer = await asyncio.wait_for(_recv_line(loop, conn), READY_TIMEOUT)
        if answer.get("op") != "ready":
            raise HandoverError(f"unexpected message {answer!r}")
        claim.close()  # the name is free for the new node before it hears "released"
        await loop.sock_sendall(conn, _line({"op": "released"}))
    except (TimeoutError, HandoverError, OSError, ValueError) as e:
        if claim.fileno() == -1:  # released already: the new node serves, this one goes
            return True
        reason = "no word within the time allowed" if isinstance(e, TimeoutError) else str(e)
        log.warning("takeover of %s by pid %s abandoned (%s); still serving", where, pid, reason)
        return False
    log.info("%s handed over to pid %s; draining", where, pid)
    return True


async def offer(claim: socket.socket,
                listening: Callable[[], tuple[list[socket.socket], socket.socket | None]],
                on_handover: Callable[[], None], where: str,
                before: Callable[[], None] = lambda: None) -> None:
    """Answer takeover requests on `claim` until one completes, then call `on_handover` (which
    starts this node's drain). `listening` gives the sockets to share at that moment, `before`
    runs as a request arrives (the new node has not read its session state yet). Runs as an
    owned task of the node; cancelled at shutdown."""
    loop = asyncio.get_running_loop()
    claim.setblocking(False)
    while True:
        conn, _ = await loop.sock_accept(claim)
        with conn:
            done = await _serve_one(loop, conn, listening, claim, where, before)
        if done:
            on_handover()
            return
