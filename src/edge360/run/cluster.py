"""`--workers N`: a supervisor that runs N worker processes on one port and counts for all of them.

The supervisor claims the address and creates the listening sockets, one SO_REUSEPORT socket per
worker (run/ports.py), so the kernel spreads connections across the workers and `--port 0` names
one port for all; each worker is handed its socket. The supervisor runs the hub (hub.Hub): the
node's one session tracker and counters, fed by every worker. SIGTERM/SIGINT are passed on to the
workers, which drain; then the supervisor saves the session state and exits 0. SIGHUP is passed on
(each worker resolves the config again itself, see server.Reload). A worker that dies is started
again on the same socket, so one crash neither shrinks the node nor refuses the connections
queued meanwhile; a worker never outlives the supervisor (run/lifeline.py).
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
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from edge360.config.live import ConfigSource
from edge360.config.schema import Config
from edge360.core.errors import Edge360Error
from edge360.run import ports
from edge360.run.hub import Hub
from edge360.run.lifeline import die_with_parent
from edge360.run.server import ready_line, serve, setup_logging
from edge360.security import tickets
from edge360.security.keyset import read_keys
from edge360.sessions.statefile import load_tracker, save_tracker

log = logging.getLogger("edge360.cluster")

#: a worker that died is restarted at most this often per minute before the node gives up
MAX_RESTARTS_PER_MINUTE = 10
#: seconds the workers get to become ready
READY_TIMEOUT = 120.0


def worker_main(config: Config, index: int, hub_path: str,
                loop_factory: Callable[[], Any] | None, source: ConfigSource | None,
                parent: int, listeners: ports.Listeners) -> None:
    """Entry point of a worker process (started with the spawn method)."""
    die_with_parent(parent)
    _reloads_wait_until_ready()
    setup_logging()
    ports.inherit(listeners)
    code = 2
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(serve(config, worker=(index, hub_path), source=source))
    except (Edge360Error, OSError) as e:  # one line, as the command line would say it
        sys.stderr.write(f"serve: worker {index}: {e}\n")
    sys.exit(code)


class Supervisor:
    def __init__(self, config: Config, loop_factory: Callable[[], Any] | None,
                 source: ConfigSource | None, listeners: ports.Listeners) -> None:
        self.config = config
        self.loop_factory = loop_factory
        self.source = source
        self.listeners = listeners
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}
        self.restarts: list[float] = []
        self.stopping = False

    def start_worker(self, index: int, hub_path: str) -> None:
        # called on the main thread only: PR_SET_PDEATHSIG follows the thread that forks
        proc = self.ctx.Process(target=worker_main, name=f"edge360-worker-{index}",
                                args=(self.config, index, hub_path, self.loop_factory,
                                      self.source, os.getpid(),
                                      ports.worker_listeners(self.listeners, index)))
        proc.start()
        self.procs[index] = proc

    def not_ready(self) -> str | None:
        """Why the node cannot become ready (a worker exited during start-up), or None."""
        for index, proc in self.procs.items():
            if proc.exitcode is not None:
                return f"worker {index} exited with status {proc.exitcode} before it was ready"
        return None

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


async def _until_ready(sup: Supervisor, hub: Hub, stop: asyncio.Event) -> str | None:
    """Wait until every worker is ready: None, or why not (stopped, a worker gone, time)."""
    for _ in range(int(READY_TIMEOUT / 0.2)):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready_event.wait(), 0.2)
        if hub.ready_event.is_set():
            return None
        if stop.is_set():
            return "stopped"
        failed = sup.not_ready()
        if failed is not None:
            return failed
    return "workers did not become ready"


async def supervise(config: Config, loop_factory: Callable[[], Any] | None,
                    source: ConfigSource | None, listeners: ports.Listeners) -> int:
    n = len(listeners.serve)
    tracker = load_tracker(config, time.time)
    hub = Hub(tracker, time.time)
    hub.expected = n
    tmp = tempfile.mkdtemp(prefix="edge360-hub-")
    hub_path = os.path.join(tmp, "hub.sock")
    server = await asyncio.start_unix_server(hub.handle, hub_path)
    port = listeners.port
    if source is not None:  # a reload in a worker resolves the port the node holds, not 0
        source = dataclasses.replace(source, flags={**source.flags, "server.port": port,
                                                    "server.workers": n})
    sup = Supervisor(config.replace("server", port=port, workers=n), loop_factory, source,
                     listeners)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: sup.signal_all(signal.SIGHUP))
    try:
        for i in range(n):
            sup.start_worker(i, hub_path)
        failed = await _until_ready(sup, hub, stop)
        if failed is not None:
            sup.stopping = True
            sup.signal_all(signal.SIGKILL)
            if failed == "stopped":
                return 0
            sys.stderr.write(f"serve: {failed}\n")
            return 2
        # the workers serve: a node being taken over may go now, and this one owns the address
        await asyncio.to_thread(ports.commit, listeners)
        ports.offer(listeners, hub.tasks, lambda: save_tracker(config, hub.tracker, time.time()))
        sys.stdout.write(ready_line(config, port, hub.demo) + "\n")
        sys.stdout.flush()
        hub.tasks.every(1.0, _expire(hub), "hub-expire")
        watcher = hub.tasks.spawn(sup.watch(hub_path), "watch-workers")
        await stop.wait()
        sup.stopping = True
        if watcher is not None:
            watcher.cancel()
        # the workers keep their copies until they close their listeners (after drain_delay);
        # then the address refuses new connections, as it does with one process
        listeners.close_listening()
        sup.signal_all(signal.SIGTERM)
        drain = config.server.drain_delay + config.server.drain_timeout + 10
        await sup.wait_all(drain)
        return 0
    finally:
        sup.stopping = True
        await hub.tasks.close()
        server.close()
        save_tracker(config, hub.tracker, time.time())
        shutil.rmtree(tmp, ignore_errors=True)


def _reloads_wait_until_ready() -> None:
    """SIGHUP terminates a process by default: until the node installs its reload handler (as
    it starts serving), one is ignored instead; there is nothing loaded yet to reload."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _expire(hub: Hub) -> Callable[[], Any]:
    async def tick() -> None:
        hub.observe()  # expires sessions, and feeds the admission queue's churn
    return tick


def run_node(config: Config, *, loop_factory: Callable[[], Any] | None,
             source: ConfigSource | None = None, takeover: bool = False) -> int:
    """Run a node; `source` is where its config came from (SIGHUP resolves it again); with
    `takeover` the node replaces the one serving its address (run/handover.py)."""
    setup_logging()
    _reloads_wait_until_ready()
    # refusals that concern the whole node come before the address is touched: one line, exit 2
    read_keys(config)
    if not tickets.read_keys(config) and config.server.workers > 1:
        # the workers must sign and check each other's admission tickets (docs/OVERLOAD.md)
        key = tickets.node_key_text()
        config = config.replace("admission", keys=key)
        if source is not None:  # a reload resolves the same key again
            source = dataclasses.replace(source, flags={**source.flags, "admission.keys": key})
    listeners = ports.claim(config, count=config.server.workers, takeover=takeover)
    try:
        if len(listeners.serve) > 1:
            with asyncio.Runner() as runner:
                return runner.run(supervise(config, loop_factory, source, listeners))
        ports.inherit(listeners)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(config, source=source))
    finally:
        listeners.close()
