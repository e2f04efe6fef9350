"""The node owns its address: the listening sockets for host:port, and who may have them.

One node serves an address. `--workers N` runs N processes on it, each accepting on its own
socket of one SO_REUSEPORT group (socket(7)) so that the kernel spreads connections across them;
the supervisor creates the whole group and hands each worker its socket, keeping a copy, so that
a worker that dies and is restarted gets the same socket back and the connections queued on it
meanwhile wait instead of being refused.

SO_REUSEPORT alone would let any process of the same user join the group and take a share of the
connections, so ownership is made explicit:

- the claim: the owner binds a Unix socket in the abstract namespace (unix(7)) named after the
  address. Only one process can hold a name, the kernel drops it when the owner dies (SIGKILL
  included), and the socket answers who owns it (SO_PEERCRED) and takeover requests
  (run/handover.py). A second node on a claimed address exits 2 with one line naming the owner.
- the probe: before creating its group a node binds the address once without SO_REUSEPORT; any
  other listener there (another program, or a node of another version) makes that fail, and the
  node exits 2 with one line.

The one deliberate exception is an upgrade: `serve --takeover` receives the owner's listening
sockets themselves (SCM_RIGHTS) and, once its workers are ready, has the owner give up its claim
and drain (docs/OPERATIONS.md). Abstract names are Linux's; elsewhere only the probe applies and
--takeover is refused.

Processes find their sockets here: `claim` (the command line, before the event loop), `inherit`
(a worker, with what its supervisor gave it) and `obtain` (the server, whichever it was).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge360.config.live import split_listen
from edge360.config.schema import Config
from edge360.core.errors import UsageError
from edge360.node.state import NodeState
from edge360.node.tasks import TaskGroup
from edge360.run import handover
from edge360.sessions.statefile import save_tracker
from edge360.sessions.tracker import SessionTracker

log = logging.getLogger("edge360.ports")

BACKLOG = 2048
#: struct ucred of SO_PEERCRED: pid, uid, gid
_UCRED = struct.Struct("3i")
_ABSTRACT = sys.platform.startswith("linux")
#: after "released", the old node's claim is free at once; this bounds waiting for the name
CLAIM_TRIES = 100
CLAIM_PAUSE = 0.05


@dataclass(slots=True)
class Listeners:
    """A node's listening sockets and its claim on their address."""

    host: str
    port: int
    #: the SO_REUSEPORT group on host:port, one socket per worker
    serve: list[socket.socket]
    #: server.metrics_listen, when set
    metrics: socket.socket | None = None
    #: this node's claim (the owner's Unix socket); None in a worker, or before commit()
    claim: socket.socket | None = None
    #: the connection to the node being taken over, until commit(), and its pid
    predecessor: socket.socket | None = None
    predecessor_pid: int = 0

    @property
    def where(self) -> str:
        return _where(self.host, self.port)

    def shared(self) -> tuple[list[socket.socket], socket.socket | None]:
        return self.serve, self.metrics

    def close_listening(self) -> None:
        """Close this process's copies of the listening sockets (other holders keep theirs)."""
        for s in [*self.serve, *([self.metrics] if self.metrics is not None else [])]:
            s.close()

    def close(self) -> None:
        self.close_listening()
        for s in (self.claim, self.predecessor):
            if s is not None:
                s.close()


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def _claim_name(host: str, port: int) -> str:
    return f"\0edge360 listen {host} {port}"


def owner_of(host: str, port: int) -> int | None:
    """The pid of the node that claims host:port, or None when no node does."""
    if not _ABSTRACT:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(_claim_name(host, port))
        except OSError:
            return None
        pid, _, _ = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _UCRED.size))
        return int(pid)


def _bind_claim(host: str, port: int) -> socket.socket | None:
    """Claim host:port; None when another node has."""
    if not _ABSTRACT:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(_claim_name(host, port))
        s.listen(8)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    return s


def _tcp(family: socket.AddressFamily, *, group: bool) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    # as asyncio's create_server: a restart binds despite connections left in TIME_WAIT, and an
    # IPv6 address is IPv6 only
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if group:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


def _in_use(where: str) -> UsageError:
    return UsageError(f"{where} is already in use by another program")


def _probe(family: socket.AddressFamily, addr: tuple[str, int], where: str) -> int:
    """Bind `addr` alone for a moment: fails when anything listens there. The port it got."""
    with _tcp(family, group=False) as s:
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise _in_use(where) from None
            raise UsageError(f"cannot listen on {where}: {e.strerror or e}") from None
        return int(s.getsockname()[1])


def _group_socket(family: socket.AddressFamily, addr: tuple[str, int],
                  where: str) -> socket.socket:
    s = _tcp(family, group=True)
    try:
        s.bind(addr)
        s.listen(BACKLOG)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:  # someone bound it since the probe
            raise _in_use(where) from None
        raise UsageError(f"cannot listen on {where}: {e.strerror or e}") from None
    return s


def _metrics_socket(config: Config) -> socket.socket | None:
    if not config.server.metrics_listen:
        return None
    host, port = split_listen(config.server.metrics_listen)
    family, addr = _resolve(host, port)
    where = f"server.metrics_listen {config.server.metrics_listen}"
    s = _tcp(family, group=False)
    try:
        s.bind(addr)
        s.listen(BACKLOG)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            raise _in_use(where) from None
        raise UsageError(f"cannot listen on {where}: {e.strerror or e}") from None
    return s


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def claim(config: Config, *, count: int, takeover: bool = False) -> Listeners:
    """The listening sockets for config's server.host:port, `count` of them (one per worker),
    plus server.metrics_listen: this node's own, or with `takeover` the running node's (then at
    least as many as it had). UsageError, one line, when the address is not this node's to take.
    """
    family, (host, port) = _resolve(config.server.host, config.server.port)
    where = _where(host, port)
    if takeover:
        if port == 0:
            raise UsageError("--takeover needs the --port of the node it replaces, not 0")
        if not _ABSTRACT:
            raise UsageError("--takeover needs Linux (abstract Unix sockets)")
        link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            link.connect(_claim_name(host, port))
        except OSError:
            link.close()
            log.warning("--takeover: no edge360 node serves %s; starting as a new one", where)
        else:
            return _take_over(link, config, family, (host, port), count)
    owned = None
    if port != 0:
        owned = _bind_claim(host, port)
        if owned is None and _ABSTRACT:
            owner = owner_of(host, port)
            who = "another edge360 node" if owner is None else f"edge360 (pid {owner})"
            raise UsageError(f"{where} is already served by {who}; stop it first, or start the "
                             "new node with --takeover to replace it")
    serve: list[socket.socket] = []
    metrics = None
    try:
        port = _probe(family, (host, port), where)
        where = _where(host, port)
        for _ in range(count):
            serve.append(_group_socket(family, (host, port), where))
        metrics = _metrics_socket(config)
        if owned is None:  # port 0: the port is known only now, and nobody else has it
            owned = _bind_claim(host, port)
    except BaseException:
        for s in [*serve, metrics, owned]:
            if s is not None:
                s.close()
        raise
    return Listeners(host, port, serve, metrics, claim=owned)


def _take_over(link: socket.socket, config: Config, family: socket.AddressFamily,
               addr: tuple[str, int], count: int) -> Listeners:
    host, port = addr
    where = _where(host, port)
    try:
        header, received = handover.request(link)
    except handover.HandoverError as e:
        link.close()
        raise UsageError(f"cannot take over {where}: {e}") from None
    n = int(header["serve"])
    serve, metrics = received[:n], (received[n] if len(received) > n else None)
    for s in serve:
        if s.type != socket.SOCK_STREAM or s.getsockname()[:2] != addr:
            for r in received:
                r.close()
            link.close()
            raise UsageError(f"cannot take over {where}: the running node listens elsewhere")
    if n > count:
        log.warning("taking over %d listening sockets: running %d workers, not %d", n, n, count)
    try:
        while len(serve) < count:  # more workers than the old node had: join its group
            serve.append(_group_socket(family, addr, where))
        metrics = _keep_metrics(config, metrics)
    except BaseException:
        for s in [*serve, *received]:
            s.close()
        link.close()
        raise
    pid = int(header.get("pid", 0))
    log.info("taking over %s from pid %d: its listening sockets are here", where, pid)
    return Listeners(host, port, serve, metrics, predecessor=link, predecessor_pid=pid)


def _keep_metrics(config: Config, inherited: socket.socket | None) -> socket.socket | None:
    """The running node's monitoring socket when this config listens on the same address."""
    if inherited is not None and config.server.metrics_listen:
        host, port = split_listen(config.server.metrics_listen)
        _, addr = _resolve(host, port)
        if inherited.getsockname()[:2] == addr:
            return inherited
    if inherited is not None:
        inherited.close()
    return _metrics_socket(config)


def commit(listeners: Listeners) -> None:
    """This node serves now: have the node it took over give up its claim, then claim the
    address (blocking, bounded; run it off the event loop)."""
    link, listeners.predecessor = listeners.predecessor, None
    if link is not None:
        try:
            handover.confirm(link)
        except handover.HandoverError as e:
            log.error("takeover of %s: the old node did not confirm (%s)", listeners.where, e)
        else:
            log.info("took over %s from pid %d, which drains", listeners.where,
                     listeners.predecessor_pid)
    if listeners.claim is not None or not _ABSTRACT:
        return
    for _ in range(CLAIM_TRIES):
        listeners.claim = _bind_claim(listeners.host, listeners.port)
        if listeners.claim is not None:
            return
        time.sleep(CLAIM_PAUSE)
    log.error("serving %s without its claim: pid %s still holds it", listeners.where,
              owner_of(listeners.host, listeners.port))


def offer(listeners: Listeners, tasks: TaskGroup,
          save: Callable[[], None] = lambda: None) -> None:
    """Answer takeover requests on this node's claim (an owned task). `save` writes the session
    state file as a request arrives, so the new node starts from this node's sessions, peak and
    views; a completed takeover sends this process SIGTERM, so it drains as on any stop."""
    if listeners.claim is None:
        return

    def drain() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
    tasks.spawn(handover.offer(listeners.claim, listeners.shared, drain, listeners.where, save),
                "port-claim")


_inherited: list[Listeners] = []


def inherit(listeners: Listeners) -> None:
    """The sockets this process serves on: a worker's from its supervisor, or a single-process
    node's from claim() on the command line."""
    _inherited[:] = [listeners]


async def obtain(node: NodeState, tasks: TaskGroup) -> Listeners:
    """The listening sockets this server process accepts on (the server's one call): inherited
    ones, or claimed now. The owner of its address also commits a takeover and answers
    takeover requests from here on."""
    config = node.config
    listeners = _inherited[0] if _inherited else claim(config, count=1)
    if listeners.predecessor is not None:
        await asyncio.to_thread(commit, listeners)
    tracker = node.tracker
    if isinstance(tracker, SessionTracker):  # a worker's sessions are its supervisor's
        offer(listeners, tasks, lambda: save_tracker(config, tracker, node.clock()))
    return listeners


def worker_listeners(listeners: Listeners, index: int) -> Listeners:
    """What worker `index` is given: its socket of the group, and monitoring for worker 0."""
    return Listeners(listeners.host, listeners.port, [listeners.serve[index]],
                     listeners.metrics if index == 0 else None)
