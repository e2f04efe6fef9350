"""Real servers for tests: in-process apps on 127.0.0.1:0, and `edge360 serve` as a child process.

Every process started here is stopped by its PID (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge360.config.schema import Config, load
from edge360.run.app import App
from edge360.run.server import listen

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "media"
READY_RE = re.compile(r"^edge360 (origin|edge) ready (https?://[^/\s]+/)")


class FakeClock:
    """The node's injectable clock, set by the test (sessions, freshness, ages)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    return load(None, dict(env or {}), flags, require_media=True)


@contextlib.asynccontextmanager
async def running_node(config: Config, **kwargs: Any) -> AsyncIterator[tuple[str, App]]:
    """An in-process node for `config` on 127.0.0.1:0, listening exactly as `edge360 serve`
    does (guards, TLS, the protocol); yields its base URL ("http://h:p") and the App."""
    app = App(config, **kwargs)
    await app.start()
    listener = await listen(app, config, host="127.0.0.1", port=0)
    scheme = "https" if config.server.tls_cert else "http"
    try:
        yield f"{scheme}://127.0.0.1:{listener.port}", app
    finally:
        listener.close()
        await listener.wait_drained(2.0)
        await app.close()


@contextlib.asynccontextmanager
async def running_app(config: Config, **kwargs: Any) -> AsyncIterator[str]:
    """running_node's base URL only."""
    async with running_node(config, **kwargs) as (url, _):
        yield url


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    ready: str
    base: str

    stderr: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the process by PID, wait for it, and keep what it wrote to stderr."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate(timeout=5)
        self.stderr += err or ""
        return self.proc.returncode


def start_process(args: list[str], env: Mapping[str, str] | None = None,
                  timeout: float = 30, cwd: Path = REPO) -> ServerProcess:
    """Start `python -m edge360 <args>` and wait for its ready line (first stdout line)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "edge360", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            m = READY_RE.match(line)
            if m:
                return ServerProcess(proc, line.strip(), m.group(2).rstrip("/"))
            if line == "" and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=5)
    raise AssertionError(f"server did not become ready: {err[-2000:]}")


@contextlib.contextmanager
def server_process(args: list[str],
                   env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    sp = start_process(args, env)
    try:
        yield sp
    finally:
        sp.stop()
