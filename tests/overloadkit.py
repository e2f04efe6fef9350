"""Test kit for overload control: two edges that are each other's steering pathways, in front of
one origin, all `edge360 serve` processes on loopback; and bounded waits on their figures."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerProcess, start_process

KEYS = "fleet:overload-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as r:
        data = json.loads(r.read())
    assert isinstance(data, dict)
    return data


def wait_for(what: Callable[[], bool], *, limit: float = 20.0, step: float = 0.2) -> None:
    """Poll `what` until it holds (bounded in time)."""
    for _ in range(int(limit / step)):
        if what():
            return
        time.sleep(step)
    raise AssertionError(f"{what} did not hold within {limit} s")


@dataclass
class Fleet:
    origin: ServerProcess
    edges: dict[str, ServerProcess]
    bases: dict[str, str]

    def stats(self, name: str) -> dict[str, object]:
        return read_json(self.bases[name] + "/api/stats")

    def steering_known(self) -> bool:
        """Every edge has polled every pathway and found it up with its capacity."""
        for name in self.edges:
            seen = self.stats(name).get("steering")
            if not isinstance(seen, dict) or not all(
                    isinstance(p, dict) and p.get("up") and p.get("capacity")
                    for p in seen.values()):
                return False
        return True


@contextlib.contextmanager
def steered_fleet(media: Path, capacities: Mapping[str, int],
                  env: Mapping[str, str] | None = None,
                  drain_delay: float = 0.0) -> Iterator[Fleet]:
    """An origin serving `media` and one edge per `capacities` entry, each a pathway of the
    others (steering TTL 1 s), sharing the admission keys."""
    ports = {name: free_port() for name in capacities}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    pathways = ",".join(f"{name}={base}" for name, base in bases.items())
    origin = start_process(["serve", "--port", "0", "--media", str(media)])
    edges: dict[str, ServerProcess] = {}
    try:
        for name, capacity in capacities.items():
            edges[name] = start_process(
                ["serve", "--role", "edge", "--port", str(ports[name]), "--upstream",
                 origin.base],
                {"EDGE360_STEERING_PATHWAYS": pathways, "EDGE360_STEERING_TTL": "1",
                 "EDGE360_SESSIONS_CAPACITY": str(capacity), "EDGE360_ADMISSION_KEYS": KEYS,
                 "EDGE360_SERVER_DRAIN_DELAY": str(drain_delay), **(env or {})})
        fleet = Fleet(origin, edges, bases)
        wait_for(fleet.steering_known)
        yield fleet
    finally:
        for sp in [*edges.values(), origin]:
            sp.stop()
