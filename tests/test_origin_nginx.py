"""Differential: the origin and nginx serve the same files; a Range/conditional matrix must agree.

Where nginx departs from RFC 9110, the case is listed in KNOWN_DIFFERENCES with the reason, and
the test checks that edge360 gives the RFC's answer there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.servers import free_port, make_config, running_app
from tests.fixtures.tools import require_tool

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        max_ranges 16;
    }}
}}
"""

CASES: list[dict[str, str]] = [
    {}, {"Range": "bytes=0-99"}, {"Range": "bytes=100-"}, {"Range": "bytes=-500"},
    {"Range": "bytes=0-0"}, {"Range": "bytes=5-999999999"}, {"Range": "bytes=999999999-"},
    {"Range": "bytes=abc"}, {"Range": "items=0-5"}, {"Range": "bytes=0-"},
    {"Range": "bytes=0-9,20-29"}, {"Range": "bytes=0-9,5-15"}, {"Range": "bytes=-0"},
    {"If-Range": "\"nope\"", "Range": "bytes=0-9"},
    {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    {"If-None-Match": "\"nope\""}, {"If-Match": "\"nope\""},
    {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
]

#: where nginx departs from RFC 9110: the Range value -> (edge360's status, why)
KNOWN_DIFFERENCES = {
    "bytes=abc": (200, "nginx answers 416; RFC 9110 §14.2: an invalid Range may be ignored"),
    "bytes=0-9,5-15": (206, "nginx sends overlapping parts; §14.2 lets us coalesce them"),
}


@pytest.fixture
def nginx(tiny_media: Path, tmp_path: Path) -> Iterator[str]:
    binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else require_tool("nginx")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port, root=tiny_media))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "error.log").read_text()) from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def parts_of(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body."""
    msg = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.get_payload()]


async def answer(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple:
    async with s.get(url, headers=headers) as r:
        body = await r.read()
        ctype = r.headers.get("Content-Type", "")
        if ctype.startswith("multipart/byteranges"):
            return r.status, None, parts_of(ctype, body)
        return r.status, r.headers.get("Content-Range"), body


@pytest.mark.parametrize("headers", CASES, ids=repr)
async def test_same_answers_as_nginx(nginx: str, tiny_media: Path, headers: dict[str, str]) -> None:
    config = make_config({"origin.media": str(tiny_media)})
    async with running_app(config) as base, aiohttp.ClientSession() as s:
        for path in ("/tiny/v0/seg_000.ts", "/tiny/br/all.ts"):
            ours = await answer(s, base + path, headers)
            theirs = await answer(s, nginx + path, headers)
            known = KNOWN_DIFFERENCES.get(headers.get("Range", ""))
            if known is not None:
                assert ours[0] == known[0], known[1]
                continue
            if ours[0] >= 400:  # error bodies are each server's own page
                ours, theirs = ours[:2], theirs[:2]
            assert ours == theirs, (path, headers, ours[:2], theirs[:2])


async def test_validators_round_trip_like_nginx(nginx: str, tiny_media: Path) -> None:
    config = make_config({"origin.media": str(tiny_media)})
    async with running_app(config) as base, aiohttp.ClientSession() as s:
        for server in (base, nginx):
            url = server + "/tiny/v0/seg_001.ts"
            async with s.get(url) as r:
                etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
            for h, expected in (({"If-None-Match": etag}, 304), ({"If-Modified-Since": lm}, 304),
                                ({"If-Range": etag, "Range": "bytes=1-2"}, 206),
                                ({"If-Range": lm, "Range": "bytes=1-2"}, 206)):
                async with s.get(url, headers=h) as r:
                    assert r.status == expected, (server, h)
