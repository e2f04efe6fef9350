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
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge360.app import TASKS, create_app
from edge360.config import Config
from edge360.state import NODE

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


async def serve(config: Config, *, sock: Any = None) -> int:
    """Run one server process until SIGTERM/SIGINT, then drain. Returns the exit status."""
    app = create_app(config)
    node = app[NODE]
    tasks = app[TASKS]
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.server.drain_timeout,
                           keepalive_timeout=config.limits.keepalive_timeout)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock, ssl_context=_ssl_context(config))
    else:
        site = web.TCPSite(runner, config.server.host, config.server.port,
                           ssl_context=_ssl_context(config), backlog=2048,
                           reuse_port=config.server.workers > 1)
    await site.start()
    server = getattr(site, "_server", None)
    port = server.sockets[0].getsockname()[1] if server and server.sockets else config.server.port
    role_state = node.role_state
    demo = "demo" in getattr(getattr(role_state, "catalog", None), "titles", {})
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
    await runner.cleanup()
    return 0


def run_node(config: Config, *, loop_factory: Callable[[], Any] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config))
