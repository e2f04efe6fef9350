"""HTTPS for the benchmark: a P-256 certificate made with openssl at run time, what a server
negotiates (openssl s_client) and full TLS handshakes per second (openssl s_time -new).

Handshakes are measured with `openssl s_time -new`, never with wrk: wrk keeps its connections,
and a client that reconnected with Python's ssl would resume sessions from the tickets both
servers issue by default, measuring resumptions instead of full handshakes. `-new` makes every
connection a full handshake with no session reused; `-www PATH` sends one HTTP/1.0 request on it,
so each connection carries exactly one request and the server closes it after the answer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import BenchError, Pinning, children_cpu_seconds, cpu_seconds

_COUNT = re.compile(r"^(\d+) connections in [\d.]+s;", re.MULTILINE)
_PER_CONNECTION = re.compile(r"(\d+) bytes read per connection")
#: what a probe reports, as `openssl s_client -brief` names it
_PROBED = {"Protocol version": "protocol", "Ciphersuite": "ciphersuite",
           "Signature type": "signature", "Server Temp Key": "key_exchange"}


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise BenchError("openssl is not installed (HTTPS certificates and handshakes need it)")
    return found


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (and its key), valid one day."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    out = subprocess.run(
        [_openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or not cert.exists():
        raise BenchError(f"openssl could not make a P-256 certificate: {out.stderr[-300:]}")
    return cert, key


def probe(hostport: str) -> dict[str, str]:
    """What a TLS 1.3 client negotiates with the server at host:port, recorded beside the figures
    (protocol, cipher suite, signature type, key exchange group)."""
    out = subprocess.run([_openssl(), "s_client", "-connect", hostport, "-tls1_3", "-brief"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
    seen: dict[str, str] = {}
    for line in (out.stdout + out.stderr).splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _PROBED and value.strip():
            seen[_PROBED[name.strip()]] = value.strip()
    if seen.get("protocol") != "TLSv1.3":
        raise BenchError(f"{hostport} did not negotiate TLS 1.3: {seen or out.stderr[-200:]}")
    return seen


@dataclass(frozen=True)
class HandshakeResult:
    handshakes: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    bytes_per_connection: int


def run_handshakes(hostport: str, path: str, *, pid: int, clients: int, duration: float,
                   pin: Pinning) -> HandshakeResult:
    """`clients` concurrent `openssl s_time -new -tls1_3 -www PATH` processes on the client core
    for `duration` seconds; the server's CPU seconds over exactly that time. s_time stops on the
    second boundary after its -time, so the rate is taken over the wall time measured here."""
    seconds = max(1, round(duration))
    cmd = [*pin.client, _openssl(), "s_time", "-connect", hostport, "-new", "-tls1_3",
           "-time", str(seconds), "-www", path]
    before, client_before = cpu_seconds(pid), children_cpu_seconds()
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs: list[tuple[int, str, str]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=seconds + 30)
            outputs.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        raise BenchError(f"s_time against {hostport} did not finish in time") from None
    finally:
        for proc in procs:  # only on a timeout: each is stopped by its own PID
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    wall = time.monotonic() - started
    after, client_after = cpu_seconds(pid), children_cpu_seconds()
    total = 0
    per_connection = 0
    for code, out, err in outputs:
        count = _COUNT.search(out)
        size = _PER_CONNECTION.search(out)
        if count is None or size is None:
            raise BenchError(f"s_time printed no summary (exit {code}): {err.strip()[-300:]}")
        total += int(count.group(1))
        per_connection = int(size.group(1))
    if total == 0 or per_connection == 0:
        raise BenchError(f"s_time against {hostport}{path}: {total} connections, "
                         f"{per_connection} bytes read per connection")
    return HandshakeResult(handshakes=total, wall_s=wall, server_cpu_s=after - before,
                           client_cpu_s=client_after - client_before,
                           bytes_per_connection=per_connection)
