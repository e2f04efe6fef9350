"""`--workers N`: a supervisor that runs N worker processes on one port and counts for all of them.

Each worker binds its own listening socket to the same port with SO_REUSEPORT, so the kernel
spreads connections across them; the supervisor holds the port first (bound, never listening) so
`--port 0` names one port for all. The supervisor runs the hub (hub.Hub): the node's one session
tracker, fed by every worker. SIGTERM/SIGINT are passed on to the workers, which drain; then the
supervisor saves the session state and exits 0. SIGHUP is passed on (each worker resolves the
config again itself, see server.Reload). A worker that dies is started
again, so one crash does not shrink the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from edge360.config.live import ConfigSource
from edge360.config.schema import Config
from edge360.run.hub import Hub
from edge360.run.server import ready_line, serve, setup_logging
from edge360.sessions.statefile import load_tracker, save_tracker

log = logging.getLogger("edge360.cluster")

#: a worker that died is restarted at most this often per minute before the node gives up
MAX_RESTARTS_PER_MINUTE = 10


def worker_main(config: Config, index: int, hub_path: str,
                loop_factory: Callable[[], Any] | None, source: ConfigSource | None = None) -> None:
    """Entry point of a worker process (started with the spawn method)."""
    setup_logging()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        sys.exit(runner.run(serve(config, worker=(index, hub_path), source=source)))


def _hold_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so the port is ours and known before the workers bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


class Supervisor:
    def __init__(self, config: Config, loop_factory: Callable[[], Any] | None,
                 source: ConfigSource | None = None) -> None:
        self.config = config
        self.loop_factory = loop_factory
        self.source = source
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}
        self.restarts: list[float] = []
        self.stopping = False

    def start_worker(self, index: int, hub_path: str) -> None:
        proc = self.ctx.Process(target=worker_main, name=f"edge360-worker-{index}",
                                args=(self.config, index, hub_path, self.loop_factory,
                                      self.source))
        proc.start()
        self.procs[index] = proc

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    async def watch(self, hub_path: str) -> None:
        """Restart workers that die while the node is not stopping."""
        while not self.stopping:
            await asyncio.sleep(0.5)
            for index, proc in list(self.procs.items()):
                if proc.exitcode is not None and not self.stopping:
                    now = time.monotonic()
                    self.restarts = [t for t in self.restarts if now - t < 60] + [now]
                    if len(self.restarts) > MAX_RESTARTS_PER_MINUTE:
                        log.error("workers keep dying; stopping the node")
                        self.stopping = True
                        return
                    log.warning("worker %d exited with %s; starting it again", index,
                                proc.exitcode)
                    self.start_worker(index, hub_path)

    async def wait_all(self, bound: float) -> None:
        """Wait up to `bound` seconds for every worker to exit; kill the ones still running."""
        deadline = time.monotonic() + bound
        for proc in self.procs.values():
            await asyncio.to_thread(proc.join, max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None and proc.pid is not None:
                log.error("worker pid %d did not drain in time; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.join, 5)


async def supervise(config: Config, loop_factory: Callable[[], Any] | None,
                    source: ConfigSource | None = None) -> int:
    n = config.server.workers
    tracker = load_tracker(config, time.time)
    hub = Hub(tracker, time.time)
    hub.expected = n
    tmp = tempfile.mkdtemp(prefix="edge360-hub-")
    hub_path = os.path.join(tmp, "hub.sock")
    server = await asyncio.start_unix_server(hub.handle, hub_path)
    held = _hold_port(config.server.host, config.server.port)
    port = held.getsockname()[1]
    if source is not None:  # a reload in a worker resolves the port the node holds, not 0
        source = dataclasses.replace(source, flags={**source.flags, "server.port": port})
    sup = Supervisor(config.replace("server", port=port), loop_factory, source)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: sup.signal_all(signal.SIGHUP))
    try:
        for i in range(n):
            sup.start_worker(i, hub_path)
        ready = asyncio.ensure_future(hub.ready_event.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not hub.ready_event.is_set():
            stopped.cancel()
            sys.stderr.write("serve: workers did not become ready\n")
            sup.stopping = True
            sup.signal_all(signal.SIGKILL)
            return 2
        held.close()  # every worker holds the port now
        sys.stdout.write(ready_line(config, port, hub.demo) + "\n")
        sys.stdout.flush()
        hub.tasks.every(1.0, _expire(hub), "hub-expire")
        watcher = hub.tasks.spawn(sup.watch(hub_path), "watch-workers")
        await stopped
        sup.stopping = True
        if watcher is not None:
            watcher.cancel()
        sup.signal_all(signal.SIGTERM)
        drain = config.server.drain_delay + config.server.drain_timeout + 10
        await sup.wait_all(drain)
        return 0
    finally:
        sup.stopping = True
        await hub.tasks.close()
        server.close()
        save_tracker(config, hub.tracker, time.time())
        with contextlib.suppress(OSError):
            held.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _expire(hub: Hub) -> Callable[[], Any]:
    async def tick() -> None:
        hub.tracker.expire(hub.clock())
    return tick


def run_node(config: Config, *, loop_factory: Callable[[], Any] | None,
             source: ConfigSource | None = None) -> int:
    """Run a node; `source` is where its config came from (SIGHUP resolves it again)."""
    setup_logging()
    if config.server.workers > 1:
        with asyncio.Runner() as runner:
            return runner.run(supervise(config, loop_factory, source))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config, source=source))
