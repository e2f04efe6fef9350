"""HTTPS end to end: `edge360 serve` with server.tls_cert/tls_key and a self-signed certificate
made at test time with the openssl command line; playlists, segments (sent in chunks, since the
kernel's sendfile cannot encrypt), ranges, and plain HTTP spoken to the TLS port."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.servers import ServerProcess, start_process
from tests.fixtures.titles import add_files


@pytest.fixture
def tls_origin(tiny_media: Path, cert: tuple[Path, Path]) -> Iterator[ServerProcess]:
    block = bytes(range(256)) * 4096  # a 4 MiB segment: many chunks through TLS
    add_files(tiny_media / "tiny", {"v0/big.ts": block * 4})
    sp = start_process(["serve", "--role", "origin", "--media", str(tiny_media), "--port", "0"],
                       env={"EDGE360_SERVER_TLS_CERT": str(cert[0]),
                            "EDGE360_SERVER_TLS_KEY": str(cert[1])})
    try:
        yield sp
    finally:
        assert sp.stop() == 0
        assert "Traceback" not in sp.stderr, sp.stderr[-3000:]


async def test_origin_serves_over_https(tls_origin: ServerProcess, tiny_media: Path,
                                        cert: tuple[Path, Path]) -> None:
    assert tls_origin.base.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    conn = aiohttp.TCPConnector(ssl=ctx)
    async with aiohttp.ClientSession(connector=conn) as http:
        async with http.get(tls_origin.base + "/tiny/master.m3u8") as r:
            assert r.status == 200
            text = await r.text()
        media_uri = next(ln for ln in text.splitlines() if ln and not ln.startswith("#"))
        async with http.get(f"{tls_origin.base}/tiny/{media_uri}") as r:
            assert r.status == 200
            assert "#EXTINF" in await r.text()
        for name in ("seg_000.ts", "big.ts"):
            want = (tiny_media / "tiny" / "v0" / name).read_bytes()
            async with http.get(f"{tls_origin.base}/tiny/v0/{name}") as r:
                assert r.status == 200
                assert await r.read() == want
            async with http.get(f"{tls_origin.base}/tiny/v0/{name}",
                                headers={"Range": "bytes=1000-200999"}) as r:
                assert r.status == 206
                assert await r.read() == want[1000:201000]
    # a client that does not trust the certificate is refused by its own TLS stack
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(tls_origin.base + "/healthz")


def test_plain_http_on_the_tls_port_is_dropped(tls_origin: ServerProcess, tiny_media: Path,
                                               cert: tuple[Path, Path]) -> None:
    port = int(tls_origin.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = s.recv(65536)
        assert b"#EXTM3U" not in data
    # the server is unharmed
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
