"""The benchmark's machinery: pinned edge360 server processes, server and client CPU time, wrk runs,
plain checks and the description of the machine (media: benchmarks/media.py; nginx:
benchmarks/nginxref.py; TLS: benchmarks/tlsbench.py).

Every process started here is stopped by its own PID (SIGTERM, then SIGKILL after a bound), and
every network address is on 127.0.0.1. Servers are pinned to one core and the client to another
(taskset), so a server's throughput is what one core of it does, and the client never steals it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
READY_RE = re.compile(r"^edge360 (origin|edge) ready (https?://[^/\s]+/)")
#: the session id every benchmark request carries, so edge360 rewrites playlists for one viewer
SID = "benchmark01"
#: shared secret every edge presents to its origin: an edge360 origin that verifies it opens no
#: session and sends playlists unrewritten, as nginx's origin sends its proxy plain files (nginx's
#: proxy sends it too, so both edges ask either origin the same way)
PEER_TOKEN = "bench-peer-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """Something the benchmark needs is not there; the message says what."""


# ---------------------------------------------------------------------------------------------
# cores


@dataclass(frozen=True)
class Pinning:
    """taskset prefixes for servers and the client; empty when the machine cannot pin."""

    server: tuple[str, ...]
    client: tuple[str, ...]
    note: str


def pinning() -> Pinning:
    """Servers on core 0, client on core 1, when there are two cores and taskset."""
    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    if taskset is None or len(cores) < 2:
        return Pinning((), (), f"not pinned (taskset={'yes' if taskset else 'no'}, "
                               f"usable cores={len(cores)})")
    return Pinning((taskset, "-c", str(cores[0])), (taskset, "-c", str(cores[1])),
                   f"servers on core {cores[0]}, client on core {cores[1]} (taskset)")


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A port nothing listens on now (nginx cannot take port 0 and tell us which it got)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its descendants, live and gone (/proc/<pid>/stat fields 14-17:
    utime, stime, and cutime, cstime: the children each process has reaped).

    Threads are included in their process's figures; children (edge360 --workers N, the
    replayer's processes) are found through their parent pid so a multi-process program is
    charged in full, and one that has exited stays charged through its parent, so the figure
    never goes down when a child ends between two readings."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            # the command name may contain spaces: fields are counted after its closing ")"
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo and len(found) < 4096:  # bounded walk
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@dataclass
class Server:
    """A running server process: which implementation, its role, its base URL and its PID."""

    name: str  # "edge360" | "nginx"
    role: str  # "origin" | "edge"
    base: str  # "http://127.0.0.1:PORT" (or https://)
    proc: subprocess.Popen[bytes]
    workdir: Path | None = None
    stderr_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the certificate an HTTPS server presents, which checks verify it against
    cafile: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM by PID, then SIGKILL by PID if it does not exit within `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def stderr_tail(self, limit: int = 600) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")[-limit:].strip()


def start_edge360(role: str, args: Sequence[str], pin: Pinning, logdir: Path,
                  timeout: float = 30, *, label: str = "") -> Server:
    """`python -m edge360 serve --port 0 ...` pinned to the server core; waits for the ready line
    (first stdout line). Raises BenchError with the tail of stderr when it never becomes ready.
    `label` names its stderr file when several servers of one role run at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    env["EDGE360_PEER_TOKEN"] = PEER_TOKEN
    stderr_path = logdir / f"edge360-{label or role}.stderr"
    cmd = [*pin.server, sys.executable, "-m", "edge360", "serve", "--role", role,
           "--host", "127.0.0.1", "--port", "0", *args]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
    server = Server("edge360", role, "", proc, stderr_path=stderr_path)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode(errors="replace")
            m = READY_RE.match(line)
            if m:
                server.base = m.group(2).rstrip("/")
                # nobody reads stdout from here on; close our end so the server never blocks
                # on a full pipe (a write then fails quietly in the child, which is fine)
                proc.stdout.close()
                return server
    server.stop(timeout=5)
    tail = server.stderr_tail().splitlines()
    raise BenchError(f"edge360 {role} did not become ready"
                     + (f": {tail[-1]}" if tail else ""))


def nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


# ---------------------------------------------------------------------------------------------
# wrk

#: a Lua `done` hook that prints wrk's own summary as one JSON line, so nothing is scraped from
#: its human-readable output; with no `request` hook wrk keeps its fast, pre-built request
WRK_DONE_LUA = r"""
-- the same Accept-Encoding the warming and checks (urllib) send: a stored playlist varies on
-- it, and a request with another value would be a cache miss, not the hit being measured
wrk.headers["Accept-Encoding"] = "identity"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

#: random single ranges of `piece` bytes inside a `size`-byte object, from a seeded generator,
#: so every server gets the same sequence of ranges (RFC 9110 §14.1.2 byte-range syntax)
WRK_RANGES_LUA = r"""
local path, size, piece
init = function(args)
  path = args[1]
  size = tonumber(args[2])
  piece = tonumber(args[3])
  math.randomseed(tonumber(args[4]))
end
request = function()
  local first = math.random(0, size - piece)
  return wrk.format("GET", path, {["Range"] = "bytes=" .. first .. "-" .. (first + piece - 1)})
end
""" + WRK_DONE_LUA


@dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float
    #: the client's own CPU seconds over the run: near the run's length, the client was the limit
    client_cpu_s: float = 0.0


def children_cpu_seconds() -> float:
    """user + system seconds of this process's finished children (the clients it ran and waited
    for): a client pinned to its own core that used all of it was the limit, not the server."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, *, pid: int, connections: int, duration: float, pin: Pinning,
            script: Path, script_args: Sequence[str] = (), timeout_s: float = 10,
            threads: int = 1) -> WrkResult:
    """One wrk run (one thread by default: the client has one core) against `url`, measuring
    the server's CPU seconds over exactly that run. Bounded by -d and by a subprocess timeout."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed")
    cmd = [*pin.client, wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           f"--timeout={int(timeout_s)}s", "--latency", "-s", str(script), url]
    if script_args:
        cmd += ["--", *script_args]
    before, client_before = cpu_seconds(pid), children_cpu_seconds()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=duration + timeout_s + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk against {url} did not finish in time") from None
    after, client_after = cpu_seconds(pid), children_cpu_seconds()
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line.removeprefix("WRKJSON "))
            errors = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")}
            return WrkResult(requests=int(data["requests"]), bytes=int(data["bytes"]),
                             duration_s=int(data["duration_us"]) / 1e6, errors=errors,
                             p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                             max_ms=data["max_us"] / 1000, server_cpu_s=after - before,
                             client_cpu_s=client_after - client_before)
    raise BenchError(f"wrk printed no summary (exit {out.returncode}): {out.stderr[-300:]}")


# ---------------------------------------------------------------------------------------------
# the machine


def edge360_code() -> str:
    """Which code the edge360 servers started here run: the compiled modules or the sources
    (edge360.native), asked of an interpreter with the environment start_edge360 gives them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    out = subprocess.run([sys.executable, "-c", "import edge360.native as n; "
                          "print(n.STATE.describe())"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip() or f"unknown: {out.stderr.strip()[-200:]}"


def machine(nginx: str | None) -> dict[str, Any]:
    """What the numbers were measured on, recorded beside them."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip()
        wrk_version = text.splitlines()[0].split(" Copyright")[0].strip() if text else ""
    openssl = shutil.which("openssl")
    openssl_version = ""
    if openssl:
        out = subprocess.run([openssl, "version"], capture_output=True, text=True, timeout=10)
        openssl_version = out.stdout.strip()
    return {
        "edge360_code": edge360_code(),
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx_version(nginx) if nginx else None,
        "wrk": wrk_version,
        "openssl": openssl_version,
    }


def loadavg() -> str:
    """/proc/loadavg's 1, 5 and 15-minute figures: other work on the machine shows up here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 30, *,
             cafile: Path | None = None) -> tuple[int, dict[str, str], bytes]:
    """A plain blocking GET (checks and cache warming, never measured); an https URL is verified
    against `cafile`, the benchmark's own self-signed certificate."""
    import ssl
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=dict(headers or {}))
    # no proxy from the environment: benchmark traffic stays on 127.0.0.1
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=str(cafile))))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except (OSError, http.client.HTTPException) as e:
        # a reset, refused or malformed answer: the caller reports it, it never crashes the run
        raise BenchError(f"GET {url}: {type(e).__name__}: {e}") from None
