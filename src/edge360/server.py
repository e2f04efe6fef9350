"""Running a node: listen, print the ready line, reload on SIGHUP, drain on SIGTERM/SIGINT.

Drain follows CONTRACT.md: /healthz answers 503 for server.drain_delay while everything still
serves, then the listener closes, in-flight responses get server.drain_timeout to finish, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge360.app import TASKS, create_app
from edge360.config import Config
from edge360.fasthttp import FastListener
from edge360.fastpath import FastPath
from edge360.hub import HubClient, RemoteTracker
from edge360.limits import GuardedSite
from edge360.metrics import Counters, TrackerView
from edge360.sessions import SessionTracker
from edge360.state import NODE
from edge360.statefile import load_tracker, save_tracker

log = logging.getLogger("edge360")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return ctx


def ready_line(config: Config, port: int, demo: bool) -> str:
    scheme = "https" if config.server.tls_cert else "http"
    base = f"{scheme}://{config.server.host}:{port}/"
    line = f"edge360 {config.server.role} ready {base}"
    if demo:
        line += f" {base}demo/master.m3u8"
    return line


async def start_site(runner: web.AppRunner, app: web.Application, config: Config, *,
                     host: str, port: int, reuse_port: bool = False,
                     ) -> tuple[GuardedSite, FastListener | None]:
    """Listen for `runner` behind the connection guards (GuardedSite: connection ceiling, head
    timeout, send timeout), with the fast path in front of aiohttp when server.fastpath is on
    (not with TLS: the fast path writes plain sockets and uses sendfile)."""
    ssl_context = _ssl_context(config)
    fast = None
    if config.server.fastpath and ssl_context is None:
        fast = FastListener(FastPath(app), config.limits.keepalive_timeout)
    site = GuardedSite(runner, config, app[NODE].counters, host=host, port=port,
                       ssl_context=ssl_context, reuse_port=reuse_port, front=fast)
    await site.start()
    return site, fast


async def serve(config: Config, *, worker: tuple[int, str] | None = None) -> int:
    """Run one server process until SIGTERM/SIGINT, then drain. Returns the exit status.

    `worker` is (index, hub socket path) when this process is one of `--workers N`: sessions
    are then counted by the supervisor's hub and the supervisor prints the ready line.
    """
    hub: HubClient | None = None
    tracker: TrackerView
    if worker is not None:
        hub = HubClient(worker[0], time.time, Counters())
        await hub.connect(worker[1])
        tracker = RemoteTracker(hub)
    else:
        tracker = load_tracker(config, time.time)
    app = create_app(config, tracker=tracker)
    node = app[NODE]
    tasks = app[TASKS]
    if hub is not None:
        hub.counters = node.counters
        node.hub = hub
        tasks.spawn(hub.listen(), "hub-listen")
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.server.drain_timeout,
                           keepalive_timeout=config.limits.keepalive_timeout)
    await runner.setup()
    site, fast = await start_site(runner, app, config, host=config.server.host,
                                  port=config.server.port, reuse_port=config.server.workers > 1)
    port = site.port
    role_state = node.role_state
    demo = "demo" in getattr(getattr(role_state, "catalog", None), "titles", {})
    if hub is not None:
        hub.ready(port, demo)
    else:
        sys.stdout.write(ready_line(config, port, demo) + "\n")
        sys.stdout.flush()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_hup() -> None:
        async def reload() -> None:
            for fn in list(node.reloaders):
                try:
                    log.info("reloaded: %s", await fn())
                except Exception as e:  # a bad keys file must not take the node down
                    log.error("reload failed: %s", e)
        tasks.spawn(reload(), "reload")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    node.draining = True
    if config.server.drain_delay > 0:
        await asyncio.sleep(config.server.drain_delay)
    drained_by = time.monotonic() + config.server.drain_timeout
    await runner.cleanup()
    if fast is not None:  # fast connections still answering get the rest of drain_timeout
        await fast.wait_drained(max(0.0, drained_by - time.monotonic()))
    if hub is not None:
        await hub.close()
    elif isinstance(tracker, SessionTracker):
        save_tracker(config, tracker, time.time())
    return 0


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)


def run_node(config: Config, *, loop_factory: Callable[[], Any] | None) -> int:
    setup_logging()
    if config.server.workers > 1:
        from edge360.cluster import supervise
        with asyncio.Runner() as runner:
            return runner.run(supervise(config, loop_factory))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config))
