"""server.proxy_protocol with real servers and raw sockets: PROXY v1 and v2 headers from a trusted
peer name the client for the access log, the session fallback (address + User-Agent) and the rate
limits; a missing or malformed header, and any header from a peer outside
server.trusted_proxies, get the connection closed without a byte of answer."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge360.config.schema import load
from edge360.core.errors import ConfigError
from edge360.node.state import NodeState
from edge360.security.clientaddr import V2_SIGNATURE
from tests.fixtures.fleets import fleet
from tests.fixtures.servers import make_config, running_node

SEGMENT = "/tiny/v0/seg_000.ts"
UA = "same-player/1.0"


def v1(src: str) -> bytes:
    return f"PROXY TCP4 {src} 127.0.0.1 40000 8080\r\n".encode()


def v2(src: str, command: int = 1) -> bytes:
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("127.0.0.1").packed
            + struct.pack("!HH", 40000, 8080))
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def get(path: str = SEGMENT, close: bool = True) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: edge\r\nUser-Agent: {UA}\r\n{conn}\r\n".encode()


def exchange(port: int, data: bytes, limit: float = 15.0) -> bytes:
    """Send `data` on a fresh connection; everything the server answers until it closes."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(data)
        while len(out) < 1 << 22:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


def start(f: Any, name: str, media: Path, trusted: str, extra: dict[str, str] | None = None
          ) -> int:
    sp = f.start(name, ["--port", "0", "--media", str(media)],
                 {"EDGE360_SERVER_PROXY_PROTOCOL": "true",
                  "EDGE360_SERVER_TRUSTED_PROXIES": trusted, **(extra or {})})
    return int(sp.base.rsplit(":", 1)[1])


def test_headers_name_the_client_and_bad_ones_close(tiny_media: Path, tmp_path: Path) -> None:
    with fleet(tmp_path) as f:
        port = start(f, "origin", tiny_media, "127.0.0.1")
        body = (tiny_media / SEGMENT.lstrip("/")).read_bytes()
        for header in (v1("203.0.113.7"), v2("198.51.100.9")):
            answer = exchange(port, header + get())
            assert status(answer) == 200 and answer.endswith(body)
        # LOCAL (a balancer's own health check): the TCP peer stands
        assert status(exchange(port, v2("192.0.2.1", command=0) + get("/healthz"))) == 200
        for bad in (get(), b"PROXY TCP4 nonsense\r\n" + get(),
                    b"PROXY TCP4 1.2.3.4 127.0.0.1 99999 80\r\n" + get(),
                    V2_SIGNATURE[:8] + b"garbage!" + get()):
            assert exchange(port, bad) == b""  # closed, not a byte answered
        clients = [ln["client"] for ln in f.log("origin") if ln.get("path") == SEGMENT]
        assert clients == ["203.0.113.7", "198.51.100.9"]
        assert [ln["client"] for ln in f.log("origin") if ln.get("path") == "/healthz"] \
            == ["127.0.0.1"]

        # a peer outside trusted_proxies may not speak for anyone: refused before it is read
        other = start(f, "strict", tiny_media, "10.0.0.0/8")
        assert exchange(other, v1("203.0.113.7") + get()) == b""
        assert exchange(other, get()) == b""
        assert not [ln for ln in f.log("strict") if "path" in ln]


@contextlib.asynccontextmanager
async def node(media: Path, flags: dict[str, Any]) -> AsyncIterator[tuple[int, NodeState]]:
    """An in-process origin listening as `edge360 serve` does, PROXY protocol on."""
    config = make_config({"origin.media": str(media), "server.proxy_protocol": True,
                          "server.trusted_proxies": ["127.0.0.1"], **flags})
    async with running_node(config) as (url, app):
        yield int(url.rsplit(":", 1)[1]), app.node


async def ask(port: int, data: bytes) -> int:
    return status(await asyncio.to_thread(exchange, port, data))


async def test_each_proxy_source_is_its_own_session(tiny_media: Path) -> None:
    async with node(tiny_media, {}) as (port, n):
        for header in (v1("203.0.113.7"), v2("203.0.113.7"), v1("203.0.113.8")):
            assert await ask(port, header + get()) == 200
        # a keep-alive connection: both requests belong to its PROXY source
        answer = await asyncio.to_thread(
            exchange, port, v2("203.0.113.9") + get(close=False) + get())
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert n.tracker.views == 3  # .7 (twice, same UA), .8, .9
        assert n.proxied == {}  # every closed connection forgot its address


async def test_rate_limits_apply_per_proxy_source(tiny_media: Path) -> None:
    flags = {"limits.rate_per_ip": 0.001, "limits.rate_burst": 2}
    async with node(tiny_media, flags) as (port, _n):
        first = [await ask(port, v1("203.0.113.7") + get()) for _ in range(3)]
        other = [await ask(port, v2("203.0.113.8") + get()) for _ in range(2)]
        assert first == [200, 200, 429]
        assert other == [200, 200]  # the balancer's own address is not what is limited


def test_proxy_protocol_needs_trusted_proxies() -> None:
    with pytest.raises(ConfigError, match=r"server\.proxy_protocol"):
        load(None, {}, {"server.proxy_protocol": True})
    with pytest.raises(ConfigError, match=r"server\.metrics_listen"):
        load(None, {"EDGE360_SERVER_METRICS_LISTEN": "no-port-here"})
