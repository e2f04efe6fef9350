"""The processes a script here starts (servers, replays, Prometheus), each with its log file in
the run's folder, and all stopped by their PIDs at the end: SIGTERM, then SIGKILL for one that
does not stop in time. scripts/fleet.py and scripts/overload.py share it."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: the line `edge360 serve` prints once it listens
READY = re.compile(r"^edge360 (origin|edge) ready (https?://[^/\s]+)/")


class Procs:
    """Every process this script started, stopped by PID in reverse order."""

    def __init__(self, logs: Path, who: str) -> None:
        self.logs = logs
        self.who = who  # the script's name, for its messages
        self.started: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              stdout_to_log: bool = False) -> subprocess.Popen[str]:
        """Start `argv` with the environment minus any EDGE360_ setting of ours, plus `env`;
        stderr (and stdout with `stdout_to_log`) go to logs/NAME.log."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
        full.update(env or {})
        with open(self.logs / f"{name}.log", "ab") as err:
            proc = subprocess.Popen(argv, cwd=REPO, env=full, stderr=err, text=True,
                                    stdout=err if stdout_to_log else subprocess.PIPE,
                                    start_new_session=True)  # Ctrl-C reaches only us
        self.started.append((name, proc))
        return proc

    def serve(self, name: str, args: list[str], env: dict[str, str] | None = None,
              timeout: float = 60) -> str:
        """Start `edge360 serve ARGS` and return its base URL once it says it is ready."""
        proc = self.start(name, [sys.executable, "-m", "edge360", "serve", *args], env)
        return wait_ready(proc, name, self.logs, timeout)

    def stop_all(self, timeout: float = 20) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{self.who}: {name} (pid {proc.pid}) did not stop; killing it",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


def wait_ready(proc: subprocess.Popen[str], name: str, logs: Path, timeout: float = 30) -> str:
    """The base URL `edge360 serve` prints when ready; RuntimeError when it exits or does
    not get there within `timeout` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            m = READY.match(proc.stdout.readline())
            if m:
                return m.group(2)
    raise RuntimeError(f"{name} did not become ready (see {logs / (name + '.log')})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
