"""Running a node: listen, print the ready line, reload on SIGHUP, drain on SIGTERM/SIGINT.

SIGHUP resolves the config again from the sources the process started with (config.live): the
keys that can change live (parents, rate limits, connection limits, trusted proxies) apply to the
running node without dropping a connection, other differences are named in one log line and left
as they were, and a config that does not resolve is logged and ignored. Then the reloaders run
(auth keys, the origin's titles, the edge's parents).

Drain (docs/HTTP.md, "Drain"): /healthz answers 503 for server.drain_delay while everything still
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

from edge360.config.live import ConfigSource, merge_live, split_listen
from edge360.config.schema import Config
from edge360.core.errors import ConfigError
from edge360.http.guard import ConnectionGuard
from edge360.http.listener import Listener
from edge360.native import STATE as NATIVE
from edge360.node.counters import Counters, TrackerView
from edge360.node.state import NodeState
from edge360.run import ports
from edge360.run.app import App
from edge360.run.hubclient import HubClient, RemoteTracker
from edge360.security.clientaddr import TrustedProxies
from edge360.sessions.statefile import load_tracker, save_tracker
from edge360.sessions.tracker import SessionTracker

log = logging.getLogger("edge360")


def ssl_context(config: Config) -> ssl.SSLContext | None:
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


async def listen(app: App, config: Config, *, host: str = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None) -> Listener:
    """The public listener of a started App (on `sock`, else host:port): guards, PROXY gate
    and TLS as configured."""
    node = app.node
    assert app.dispatcher is not None
    guard = ConnectionGuard(config, node.counters, clients=node.proxied)
    proxy = (lambda: node.trusted) if config.server.proxy_protocol else None
    listener = Listener(app.dispatcher, guard, ssl_context=ssl_context(config), proxy=proxy)
    await listener.start(host, port, sock=sock)
    return listener


async def listen_monitoring(app: App, config: Config,
                            sock: socket.socket | None = None) -> Listener | None:
    """The server.metrics_listen listener, or None when off. Its connections are guarded but
    counted apart: a full public port never sheds a scrape."""
    if not config.server.metrics_listen:
        return None
    host, port = split_listen(config.server.metrics_listen)
    listener = Listener(app.monitoring(), ConnectionGuard(config, Counters()))
    await listener.start(host, port, sock=sock)
    log.info("metrics listening on http://%s:%d/", host, listener.port)
    return listener


class Reload:
    """What SIGHUP does (see the module docstring)."""

    def __init__(self, app: App, source: ConfigSource | None, listeners: list[Listener]) -> None:
        self.app, self.node = app, app.node
        self.source, self.listeners = source, listeners

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
        self.app.limits.configure(merged)
        for listener in self.listeners:
            listener.guard.configure(merged)
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
    app = App(config, tracker=tracker)
    node = app.node
    if hub is not None:
        hub.counters = node.counters
        node.hub = hub
        app.tasks.spawn(hub.listen(), "hub-listen")
    await app.start()
    sockets = await ports.obtain(node, app.tasks)  # this node's own sockets (run/ports.py)
    listener = await listen(app, config, sock=sockets.serve[0])
    # with --workers N, worker 0 listens for the monitoring port; its answers are node-wide
    monitoring = await listen_monitoring(app, config, sockets.metrics) \
        if worker is None or worker[0] == 0 else None

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload = Reload(app, source, [listener])

    def on_hup() -> None:
        app.tasks.spawn(reload(), "reload")

    # before the ready line: a signal sent as soon as the node says it is ready is handled
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    demo = app.serves_demo()
    if worker is None or worker[0] == 0:
        log.log(logging.WARNING if NATIVE.unusable else logging.INFO, "code: %s",
                NATIVE.describe())
    if hub is not None:
        hub.ready(listener.port, demo)
    else:
        sys.stdout.write(ready_line(config, listener.port, demo) + "\n")
        sys.stdout.flush()
    await stop.wait()
    node.draining = True
    if config.server.drain_delay > 0:
        await asyncio.sleep(config.server.drain_delay)
    listener.close()
    await listener.wait_drained(config.server.drain_timeout)
    if monitoring is not None:  # scrapes answer 503 from /healthz until the very end
        monitoring.close()
        await monitoring.wait_drained(1.0)
    await app.close()
    if hub is not None:
        await hub.close()
    elif isinstance(tracker, SessionTracker):
        save_tracker(config, tracker, time.time())
    return 0


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
