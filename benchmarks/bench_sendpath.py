"""How a memory-held 8 MiB body is cheapest to send: the sender's CPU per byte over loopback TCP
for each way an edge could hold and send it, measured side by side in interleaved rounds.

    .venv/bin/python -m benchmarks.bench_sendpath [--rounds N] [--json OUT] [--quick]
    (in RESULTS.md through `python -m benchmarks.run --only sendpath`, see benchmarks/only.py)

The ways (each sends the same 8 MiB, 4 MiB per call at most, as http.send does):
- bytes + write: the body held as bytes (the memory tier), os.write of memoryview slices;
- memfd + sendfile: the body in a memfd, os.sendfile from it (no copy out of user memory);
- memfd mmap + write: the body in a memfd mapped into memory (so page-aligned), os.write;
- file + sendfile: the body in a file in the page cache, os.sendfile (what nginx does with
  `sendfile on` for a cached file).

The sender runs on the server core and a reader on the client core (benchmarks.harness pinning);
the figure is bytes sent / the sender's CPU seconds (process time, kernel included: on loopback
the kernel's TCP work for both ends runs largely in the sender's context, for every way alike).
This is the send loop alone, without a server around it: docs/ARCHITECTURE.md ("Why
memory-held bodies are written") says what it decided and what the server measured.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness

BODY = 8 * 1024 * 1024
CALL = 4 * 1024 * 1024
WAYS = ("bytes + write", "memfd + sendfile", "memfd mmap + write", "file + sendfile")


def _reader(port: int, core: int | None) -> int:
    """A child process that reads everything from 127.0.0.1:port and exits at EOF."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns into the caller's code
        if core is not None:
            os.sched_setaffinity(0, {core})
        conn = socket.create_connection(("127.0.0.1", port))
        buf = bytearray(256 * 1024)
        while conn.recv_into(buf):
            pass
    finally:
        os._exit(0)


def _senders(fd_out: int, body: bytes, workdir: Path) -> dict[str, Callable[[], None]]:
    memfd = os.memfd_create("edge360-bench")
    os.write(memfd, body)
    mapped = mmap.mmap(memfd, BODY)
    path = workdir / "body.bin"
    path.write_bytes(body)
    filefd = os.open(path, os.O_RDONLY)

    def write_from(view: memoryview) -> Callable[[], None]:
        def send() -> None:
            pos = 0
            while pos < BODY:
                pos += os.write(fd_out, view[pos:pos + CALL])
        return send

    def sendfile_from(fd: int) -> Callable[[], None]:
        def send() -> None:
            offset = 0
            while offset < BODY:
                offset += os.sendfile(fd_out, fd, offset, min(CALL, BODY - offset))
        return send

    return {"bytes + write": write_from(memoryview(body)),
            "memfd + sendfile": sendfile_from(memfd),
            "memfd mmap + write": write_from(memoryview(mapped)),
            "file + sendfile": sendfile_from(filefd)}


def measure(rounds: int, bodies: int) -> dict[str, Any]:
    pin = harness.pinning()
    server_core = int(pin.server[-1]) if pin.server else None
    client_core = int(pin.client[-1]) if pin.client else None
    if server_core is not None:
        os.sched_setaffinity(0, {server_core})
    listener = socket.create_server(("127.0.0.1", 0))
    child = _reader(listener.getsockname()[1], client_core)
    conn, _ = listener.accept()
    body = os.urandom(BODY)
    per_way: dict[str, list[float]] = {w: [] for w in WAYS}
    with tempfile.TemporaryDirectory(prefix="edge360-sendpath-") as tmp:
        senders = _senders(conn.fileno(), body, Path(tmp))
        for _ in range(rounds):
            for way in WAYS:
                send = senders[way]
                cpu = time.process_time()
                for _ in range(bodies):
                    send()
                per_way[way].append(BODY * bodies / (time.process_time() - cpu) / 1e9)
    conn.close()
    os.waitpid(child, 0)
    medians = {w: round(statistics.median(v), 3) for w, v in per_way.items()}
    return {"python": platform.python_version(), "kernel": platform.release(),
            "body_bytes": BODY, "bodies_per_round": bodies, "rounds": rounds,
            "pinning": f"sender core {server_core}, reader core {client_core}",
            "gb_per_cpu_s": medians, "gb_per_cpu_s_all": per_way,
            "best": max(medians, key=lambda w: medians[w])}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_sendpath")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--quick", action="store_true", help="two rounds of a few bodies")
    args = p.parse_args()
    data = measure(2 if args.quick else args.rounds, 5 if args.quick else 60)
    for way, value in data["gb_per_cpu_s"].items():
        print(f"{way:20s} {value:6.2f} GB per sender CPU-second (median)")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
