"""Running a node: listen, print the ready line, reload on SIGHUP, drain on SIGTERM/SIGINT.

SIGHUP resolves the config again from the sources the process started with (liveconfig): the
keys that can change live (parents, rate limits, connection limits, trusted proxies) apply to the
running node without dropping a connection, other differences are named in one log line and left
as they were, and a config that does not resolve is logged and ignored. Then the reloaders run
(auth keys, the origin's titles, the edge's parents).

Drain follows CONTRACT.md: /healthz answers 503 for server.drain_delay while everything still
serves, then the listener closes, in-flight responses get server.drain_timeout to finish, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import sys
import time

from aiohttp import web

from edge360.config.live import ConfigSource, merge_live, split_listen
from edge360.config.schema import Config
from edge360.core.errors import ConfigError
from edge360.http.guard import LIMITS, GuardedSite
from edge360.http.middleware import runner_options
from edge360.http.protocol import FastListener
from edge360.node.counters import Counters, TrackerView
from edge360.node.state import NODE, NodeState
from edge360.ops import endpoints as ops
from edge360.run import ports
from edge360.run.app import TASKS, create_app
from edge360.run.fastpath import FastPath
from edge360.run.hub import HubClient, RemoteTracker
from edge360.security.clientaddr import TrustedProxies
from edge360.sessions.statefile import load_tracker, save_tracker
from edge360.sessions.tracker import SessionTracker

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
                     host: str, port: int, sock: socket.socket | None = None,
                     ) -> tuple[GuardedSite, FastListener | None]:
    """Listen for `runner` behind the connection guards (GuardedSite: connection ceiling, head
    timeout, send timeout), with the fast path in front of aiohttp when server.fastpath is on
    (not with TLS: the fast path writes plain sockets and uses sendfile)."""
    ssl_context = _ssl_context(config)
    fast = None
    if config.server.fastpath and ssl_context is None:
        fast = FastListener(FastPath(app), config.limits.keepalive_timeout, app[NODE])
    site = GuardedSite(runner, config, app[NODE].counters, host=host, port=port,
                       ssl_context=ssl_context, sock=sock, front=fast, node=app[NODE])
    await site.start()
    return site, fast


async def start_monitoring(app: web.Application, config: Config, sock: socket.socket | None = None,
                           ) -> tuple[web.AppRunner, GuardedSite] | None:
    """The server.metrics_listen listener (/metrics, /healthz, /api/stats only), or None when off.
    Its connections are guarded but counted apart: a full public port never sheds a scrape."""
    if not config.server.metrics_listen:
        return None
    runner = web.AppRunner(ops.monitoring_app(app), handle_signals=False, access_log=None,
                           shutdown_timeout=1)
    await runner.setup()
    host, port = split_listen(config.server.metrics_listen)
    site = GuardedSite(runner, config.replace("server", proxy_protocol=False), Counters(),
                       host=host, port=port, sock=sock)
    await site.start()
    log.info("metrics listening on http://%s:%d/", host, site.port)
    return runner, site


class Reload:
    """What SIGHUP does (see the module docstring)."""

    def __init__(self, app: web.Application, source: ConfigSource | None,
                 sites: list[GuardedSite], fast: FastListener | None) -> None:
        self.app, self.node = app, app[NODE]
        self.source, self.sites, self.fast = source, sites, fast

    async def __call__(self) -> None:
        if self.source is not None:
            try:
                fresh = await asyncio.to_thread(self.source.load)
            except ConfigError as e:
                log.error("reload refused, still serving with the previous config: %s", e)
            else:
                self.apply(fresh)
        for fn in list(self.node.reloaders):
            try:
                log.info("reloaded: %s", await fn())
            except Exception as e:  # a bad keys file must not take the node down
                log.error("reload failed: %s", e)

    def apply(self, fresh: Config) -> None:
        node: NodeState = self.node
        merged, changed, frozen = merge_live(node.config, fresh)
        if frozen:
            log.warning("reload: %s cannot change without a restart; left as they were",
                        ", ".join(frozen))
        if not changed:
            return
        node.config = merged
        node.trusted = TrustedProxies(merged.server.trusted_proxies)
        self.app[LIMITS].configure(merged)
        for site in self.sites:
            site.guard.configure(merged)
        if self.fast is not None:  # decided per request from now on, keep-alive ones included
            self.fast.answer = FastPath(self.app)
        log.info("reload: applied %s", ", ".join(changed))


async def serve(config: Config, *, worker: tuple[int, str] | None = None,
                source: ConfigSource | None = None) -> int:
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
    runner = web.AppRunner(app, handle_signals=False, **runner_options(node),
                           shutdown_timeout=config.server.drain_timeout,
                           keepalive_timeout=config.limits.keepalive_timeout)
    await runner.setup()
    listeners = await ports.obtain(app)  # this node's own sockets (run/ports.py)
    site, fast = await start_site(runner, app, config, host=config.server.host,
                                  port=config.server.port, sock=listeners.serve[0])
    port = site.port
    # with --workers N, worker 0 listens for the monitoring port; its answers are node-wide
    monitoring = (await start_monitoring(app, config, listeners.metrics)
                  if worker is None or worker[0] == 0 else None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    reload = Reload(app, source, [site], fast)

    def on_hup() -> None:
        tasks.spawn(reload(), "reload")

    # before the ready line: a signal sent as soon as the node says it is ready is handled
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    role_state = node.role_state
    demo = "demo" in getattr(getattr(role_state, "catalog", None), "titles", {})
    if hub is not None:
        hub.ready(port, demo)
    else:
        sys.stdout.write(ready_line(config, port, demo) + "\n")
        sys.stdout.flush()
    await stop.wait()
    node.draining = True
    if config.server.drain_delay > 0:
        await asyncio.sleep(config.server.drain_delay)
    drained_by = time.monotonic() + config.server.drain_timeout
    await runner.cleanup()
    if fast is not None:  # fast connections still answering get the rest of drain_timeout
        await fast.wait_drained(max(0.0, drained_by - time.monotonic()))
    if monitoring is not None:  # scrapes answer 503 from /healthz until the very end
        await monitoring[0].cleanup()
    if hub is not None:
        await hub.close()
    elif isinstance(tracker, SessionTracker):
        save_tracker(config, tracker, time.time())
    return 0


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
