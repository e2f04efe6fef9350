"""The benchmark's machinery: test media, pinned server processes (edge360 and nginx), server CPU
time from /proc, wrk runs and the description of the machine.

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
from string import Template
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf.template"
READY_RE = re.compile(r"^edge360 (origin|edge) ready (https?://[^/\s]+/)")
#: the title folder the benchmark media lives in; URLs are /bench/...
TITLE = "bench"
#: the session id every benchmark request carries, so edge360 rewrites playlists for one viewer
SID = "benchmark01"
#: a master playlist is padded to this size: the ~218-byte master the issue measures
MASTER_SIZE = 218
#: shared secret between the edge360 edge and origin, so the origin serves the edge unrewritten
#: playlists (docs/HTTP.md, "Tiers") exactly as nginx's origin serves nginx's proxy plain files
PEER_TOKEN = "bench-peer-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class NginxTemplate(Template):
    """@{name} placeholders: "$" is nginx's own variable syntax."""

    delimiter = "@"


class BenchError(RuntimeError):
    """Something the benchmark needs is not there; the message says what."""


# ---------------------------------------------------------------------------------------------
# media


@dataclass(frozen=True)
class Media:
    """The generated media root and the URL paths of its objects (all under /bench/)."""

    root: Path
    master: str
    small: str
    segment: str
    segment_size: int
    big: str
    big_size: int
    herd: tuple[str, ...]
    herd_size: int


def make_media(root: Path, *, segment_size: int, big_size: int, herd_count: int,
               herd_size: int, seed: int) -> Media:
    """Write a self-contained HLS title into `root/bench`: a 218-byte master, one media playlist,
    a 218-byte .ts (the small segment-like object), an 8 MiB and a 64 MiB .ts, and one fresh
    object per herd round (each herd must miss a cold cache). Bytes are seeded pseudo-random:
    content does not matter to either server, and the same seed gives the same files."""
    import random

    rng = random.Random(seed)
    title = root / TITLE
    (title / "v").mkdir(parents=True, exist_ok=True)
    herd = tuple(f"v/herd_{i:03d}.ts" for i in range(herd_count))
    files = {"v/small.ts": MASTER_SIZE, "v/seg8m.ts": segment_size, "v/big64m.ts": big_size}
    files.update({name: herd_size for name in herd})
    for name, size in files.items():
        (title / name).write_bytes(rng.randbytes(size))
    media_lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10",
                   "#EXT-X-PLAYLIST-TYPE:VOD"]
    for name in ("seg8m.ts", "big64m.ts", "small.ts"):
        media_lines += ["#EXTINF:10.0,", name]
    media_lines.append("#EXT-X-ENDLIST")
    (title / "v" / "index.m3u8").write_text("\n".join(media_lines) + "\n")
    head = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
            '#EXT-X-STREAM-INF:BANDWIDTH=5000000,AVERAGE-BANDWIDTH=4500000,'
            'RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"\nv/index.m3u8\n')
    # a comment line (RFC 8216 §4.1: lines starting "#" but not "#EXT" are comments) pads the
    # master to exactly MASTER_SIZE bytes so both servers send the same body length
    pad = MASTER_SIZE - len(head) - len("#\n")
    if pad < 0:
        raise BenchError("master playlist head is longer than MASTER_SIZE")
    (title / "master.m3u8").write_text(head + "#" + "p" * pad + "\n")
    # read every file once so the first measured server does not pay the disk for the second;
    # date them back: a title published long ago (edge360 holds back a file written within
    # origin.settle_seconds as still arriving)
    then = time.time() - 3600
    for path in title.rglob("*"):
        if path.is_file():
            path.read_bytes()
            os.utime(path, (then, then))
    return Media(root=root, master=f"/{TITLE}/master.m3u8", small=f"/{TITLE}/v/small.ts",
                 segment=f"/{TITLE}/v/seg8m.ts", segment_size=segment_size,
                 big=f"/{TITLE}/v/big64m.ts", big_size=big_size,
                 herd=tuple(f"/{TITLE}/{h}" for h in herd), herd_size=herd_size)


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
    """utime + stime of `pid` and its descendants, in seconds (/proc/<pid>/stat fields 14, 15).

    Threads are included in their process's figures; children (edge360 --workers N) are found
    through their parent pid so a multi-process server is charged in full."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            # the command name may contain spaces: fields are counted after its closing ")"
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
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
    base: str  # "http://127.0.0.1:PORT"
    proc: subprocess.Popen[bytes]
    workdir: Path | None = None
    stderr_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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
                  timeout: float = 30) -> Server:
    """`python -m edge360 serve --port 0 ...` pinned to the server core; waits for the ready line
    (first stdout line). Raises BenchError with the tail of stderr when it never becomes ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    env["EDGE360_PEER_TOKEN"] = PEER_TOKEN
    stderr_path = logdir / f"edge360-{role}.stderr"
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


def nginx_has_slice(nginx: str) -> bool:
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10)
    return "--with-http_slice_module" in (out.stderr + out.stdout)


def start_nginx(role: str, media_root: Path, pin: Pinning, workdir: Path, *,
                upstream: str = "", slice_module: bool = True, timeout: float = 15) -> Server:
    """One nginx process (master_process off, so the measured PID is the one doing the work)
    from benchmarks/nginx.conf.template. The template holds both server blocks; the one this
    instance does not play listens on a unix socket in its work dir, so it is never reached."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    values = {
        "workdir": str(workdir),
        "media_root": str(media_root),
        "origin_listen": listen if role == "origin" else f"unix:{workdir}/unused-origin.sock",
        "proxy_listen": listen if role == "edge" else f"unix:{workdir}/unused-proxy.sock",
        "upstream": upstream.removeprefix("http://") or "127.0.0.1:9",
        # without the slice module the 64 MiB object is cached whole (noted in the results)
        "slice_directive": "slice 1m;" if slice_module else "",
        "slice_key": "$slice_range" if slice_module else "",
        "slice_header": ("proxy_set_header Range $slice_range;" if slice_module else ""),
    }
    conf = workdir / "nginx.conf"
    conf.write_text(NginxTemplate(NGINX_TEMPLATE.read_text()).substitute(values))
    stderr_path = workdir / "stderr"
    cmd = [*pin.server, nginx, "-p", str(workdir), "-c", str(conf),
           "-e", str(workdir / "error.log"), "-g", "daemon off; master_process off;"]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
    server = Server("nginx", role, f"http://{listen}", proc, workdir=workdir,
                    stderr_path=stderr_path, extra={"slice": slice_module})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.05)
    server.stop(timeout=5)
    err_log = (workdir / "error.log")
    tail = err_log.read_text(errors="replace")[-400:] if err_log.exists() else server.stderr_tail()
    raise BenchError(f"nginx {role} did not start: {tail.strip()}")


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


#: every connection's first request carries `Cache-Control: max-age=3600` (a client's own cache
#: directive: edge360's fast path hands such a request to aiohttp, nginx's proxy_cache ignores it),
#: every later one is plain; one wrk thread per connection, so the thread's `first` flag is the
#: connection's. Measures whether a connection comes back to the fast path after a hand-over.
WRK_FIRST_HANDED_LUA = r"""
local first = true
request = function()
  if first then
    first = false
    return wrk.format("GET", nil, {["Cache-Control"] = "max-age=3600"})
  end
  return wrk.format("GET")
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
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 30)
    after = cpu_seconds(pid)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line.removeprefix("WRKJSON "))
            errors = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")}
            return WrkResult(requests=int(data["requests"]), bytes=int(data["bytes"]),
                             duration_s=int(data["duration_us"]) / 1e6, errors=errors,
                             p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                             max_ms=data["max_us"] / 1000, server_cpu_s=after - before)
    raise BenchError(f"wrk printed no summary (exit {out.returncode}): {out.stderr[-300:]}")


# ---------------------------------------------------------------------------------------------
# the machine


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
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx_version(nginx) if nginx else None,
        "wrk": wrk_version,
    }


def loadavg() -> str:
    """/proc/loadavg's 1, 5 and 15-minute figures: other work on the machine shows up here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def http_get(url: str, headers: Mapping[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """A plain blocking GET (checks and cache warming, never measured)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=dict(headers or {}))
    # no proxy from the environment: benchmark traffic stays on 127.0.0.1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except (OSError, http.client.HTTPException) as e:
        # a reset, refused or malformed answer: the caller reports it, it never crashes the run
        raise BenchError(f"GET {url}: {type(e).__name__}: {e}") from None
