"""What a replay asks of this machine, checked before it starts: descriptors per process
(RLIMIT_NOFILE), ephemeral ports per source address, and source addresses that can be bound.

Each virtual viewer holds its own connection from its arrival until it leaves, so a process needs
about as many descriptors as its viewers at their peak, and all processes together as many ports
per (source address, target) pair. The kernel hands out ports from net.ipv4.ip_local_port_range
(32768-60999 by default: 28,232), but only half of them cheaply: since Linux 4.2, connect()
takes ports of one parity first and leaves the other half to bind(), and once its half is used up
every further connect scans the rest of the range. Measured on the 2-core test machine (Linux
6.18, one source address, one target): 25-30 µs per connection up to ~12,000 open, then 380-790 µs
each by 15,000-18,000 (2.7-5.2 ms when the socket is first bound to port 0). A replayer that pays
that in its event loop falls behind its players and times out, so a plan gets half the range per
address pair. The runner raises the soft descriptor limit up to the hard one; a plan that needs
more of either is refused with the flag that fixes it.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import resource
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge360.core.errors import UsageError
from edge360.replay.model import Viewer

#: descriptors a replay process uses besides its viewers' connections: the event loop, pipes,
#: standard streams, the server sampler's connections
BASE_FDS = 64
MARGIN = 1.1                     # a tenth more connections than the sampled peak
PORT_SHARE = 0.9                 # of an address pair's cheap ports a replay may plan to use
DEFAULT_PORTS = 60999 - 32768 + 1
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
MAX_COUNTED_SOURCES = 254        # `--source-addresses N`: 127.0.0.1 .. 127.0.0.N


def peak_concurrent(viewers: Iterable[Viewer]) -> int:
    """The most viewers present at once (each from its arrival for its watch time)."""
    spans = [(v.start_s, v.start_s + v.watch_s) for v in viewers]
    if not spans:
        return 0
    ends = sorted(b for _, b in spans)
    starts = sorted(a for a, _ in spans)
    # at each arrival: viewers arrived so far minus those gone strictly before it
    return max(i + 1 - bisect.bisect_left(ends, a) for i, a in enumerate(starts))


def connections_needed(peak_viewers: int, pool: int | None) -> int:
    """Connections a process holds at its peak: one per viewer, or the shared pool's bound."""
    held = peak_viewers if pool is None else min(pool, peak_viewers)
    return math.ceil(held * MARGIN)


def ports_per_pair() -> int:
    """How many ephemeral ports one (source address, target) pair has on this machine."""
    try:
        low, high = (int(x) for x in PORT_RANGE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_PORTS
    return max(high - low + 1, 1)


def cheap_ports_per_pair() -> int:
    """The ports connect() finds without scanning the range (its half; see the docstring)."""
    return max(ports_per_pair() // 2, 1)


@dataclass(frozen=True)
class Nofile:
    soft: int
    hard: int
    needed: int


def raise_nofile(needed: int) -> Nofile:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (children inherit it); the hard limit
    cannot be raised here, so a need above it is returned for the caller to refuse."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = hard == resource.RLIM_INFINITY
    if needed > soft and (unlimited or needed <= hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return Nofile(soft=soft, hard=-1 if unlimited else hard, needed=needed)


def check_descriptors(per_worker_peak: int, pool: int | None, workers: int,
                      total_peak: int) -> Nofile:
    """Raise the limit for the busiest worker, or refuse naming the worker count that fits."""
    held = connections_needed(per_worker_peak, pool)
    got = raise_nofile(held + BASE_FDS)
    if got.soft >= got.needed:
        return got
    room = max(got.hard - BASE_FDS, 1)
    fit = math.ceil(connections_needed(total_peak, pool) / room)
    raise UsageError(
        f"a worker would hold ~{held:,} connections at its peak (one per viewer) but may open "
        f"only {got.hard:,} descriptors (RLIMIT_NOFILE hard limit): use --workers {max(fit, 2)} "
        f"or more (now {workers}), a smaller --scale, or --connections N for a shared pool")


def check_ports(total_peak: int, pool: int | None, workers: int, sources: int,
                loopback: bool) -> int:
    """Refuse a plan that needs more ports than its source addresses give cheaply; returns the
    ports one address pair gives cheaply."""
    ports = cheap_ports_per_pair()
    held = connections_needed(total_peak, None if pool is None else pool * workers)
    if held <= PORT_SHARE * ports * max(sources, 1):
        return ports
    fit = math.ceil(held / (PORT_SHARE * ports))
    how = (f"--source-addresses {fit} (127.0.0.1-127.0.0.{fit})" if loopback
           else f"--source-addresses with {fit} local addresses")
    raise UsageError(
        f"~{held:,} connections at the peak need more than the {ports:,} ephemeral ports that "
        f"connect() finds quickly on {max(sources, 1)} source address(es) toward one target "
        f"(half of ip_local_port_range each): use {how}")


def parse_sources(text: str | None, target_host: str | None) -> tuple[str, ...]:
    """`--source-addresses`: a count N (127.0.0.1 .. 127.0.0.N, loopback targets only) or a
    comma-separated list of local addresses."""
    if not text:
        return ()
    if text.strip().isdigit():
        n = int(text)
        if not 1 <= n <= MAX_COUNTED_SOURCES:
            raise UsageError(f"--source-addresses {n}: a count must be 1 to "
                             f"{MAX_COUNTED_SOURCES}")
        if not is_loopback(target_host):
            raise UsageError(f"--source-addresses {n} spreads over 127.0.0.x, which reaches only "
                             f"a loopback target (got host {target_host!r}): list addresses")
        return tuple(f"127.0.0.{i}" for i in range(1, n + 1))
    out = []
    for part in text.split(","):
        try:
            out.append(str(ipaddress.ip_address(part.strip())))
        except ValueError:
            raise UsageError(f"--source-addresses: {part.strip()!r} is not an IP address "
                             "(give a count or a comma-separated list)") from None
    return tuple(dict.fromkeys(out))


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(sources: tuple[str, ...]) -> None:
    """Each source address must be one this machine can send from."""
    for addr in sources:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr, 0))
        except OSError as exc:
            raise UsageError(f"--source-addresses: cannot send from {addr}: "
                             f"{exc.strerror or exc}") from None
