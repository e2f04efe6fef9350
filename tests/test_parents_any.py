"""Parents of any kind, with real processes: nginx serving the media root as static files,
python's http.server, and an edge360 origin, side by side behind one edge. None has to answer a
health endpoint: the edge judges parents by the answers its own requests get, so every parent
stays up, serves its share of the keys, and `edge360_parent_up` reads 1 for each. The optional
active probe, pointed at a path nginx serves, keeps it up; pointed at one it does not, marks it
down while the content still flows through the others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.servers import ServerProcess, start_process
from tests.fixtures.titles import make_title
from tests.fixtures.tools import require_tool

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
TITLES = ("t0", "t1", "t2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(100):  # 10 s at most
        assert proc.poll() is None, f"{what} exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} never listened on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def nginx(root: Path, work: Path) -> Iterator[tuple[str, Path]]:
    """nginx serving `root` as static files; yields its URL and its access log."""
    binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else require_tool("nginx")
    work.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port, root=root))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "nginx")
        yield f"http://127.0.0.1:{port}", work / "access.log"
    finally:
        stop(proc)


@contextlib.contextmanager
def http_server(root: Path, log: Path) -> Iterator[str]:
    """python -m http.server serving `root` (it logs each request on stderr)."""
    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                 "--directory", str(root), str(port)],
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_listening(port, proc, "http.server")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


def media_paths(root: Path) -> list[str]:
    return sorted("/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def metric(s: aiohttp.ClientSession, base: str, name: str) -> dict[str, float]:
    """A metric's samples by their `parent` label (or "" when it has none)."""
    async with s.get(base + "/metrics") as r:
        text = await r.text()
    return {smp.labels.get("parent", ""): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples
            if smp.name == name}


async def play_all(s: aiohttp.ClientSession, edge: str, paths: list[str]) -> None:
    for i, path in enumerate(paths):
        async with s.get(f"{edge}{path}?sid=viewer{i:04d}") as r:
            await r.read()
            assert r.status == 200, (path, r.status)


def test_nginx_http_server_and_edge360_parents_all_stay_up_and_serve(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for title in TITLES:
        make_title(media, title)
    paths = media_paths(media)
    origin: ServerProcess | None = None
    edge: ServerProcess | None = None
    with nginx(media, tmp_path / "nginx") as (ngx, ngx_log), \
            http_server(media, tmp_path / "http.log") as plain:
        try:
            origin = start_process(["serve", "--port", "0", "--media", str(media)])
            parents = [ngx, plain, origin.base]
            edge = start_process(
                ["serve", "--role", "edge", "--port", "0",
                 *[arg for p in parents for arg in ("--upstream", p)]],
                {"EDGE360_EDGE_HEALTH_INTERVAL": "0.2", "EDGE360_EDGE_PREFETCH_DEPTH": "0"})
            asyncio.run(_all_up(edge.base, origin.base, parents, paths))
        finally:
            for proc in (edge, origin):
                if proc is not None:
                    assert proc.stop() == 0, proc.stderr[-2000:]
        served_ngx = ngx_log.read_text().count("HTTP/1.1\" 200")
        served_plain = (tmp_path / "http.log").read_text().count("\" 200 ")
    # rendezvous hashing gave each parent its share of the keys: nobody was skipped
    assert served_ngx > 0 and served_plain > 0, (served_ngx, served_plain)


async def _all_up(edge: str, origin: str, parents: list[str], paths: list[str]) -> None:
    async with aiohttp.ClientSession() as s:
        await play_all(s, edge, paths)
        up = await metric(s, edge, "edge360_parent_up")
        assert up == dict.fromkeys(parents, 1.0)
        await asyncio.sleep(1.0)  # five health intervals: nothing probes them down meanwhile
        async with s.get(edge + "/healthz") as r:
            health = await r.json()
        assert health["parents"] == dict.fromkeys(parents, True)
        assert await metric(s, edge, "edge360_parent_up") == dict.fromkeys(parents, 1.0)
        async with s.get(edge + "/metrics") as r:
            text = await r.text()
        codes = {smp.labels["code"] for fam in text_string_to_metric_families(text)
                 for smp in fam.samples if smp.name == "edge360_upstream_requests_total"}
        assert codes == {"200"}, codes  # every exchange upstream was a plain success
        async with s.get(origin + "/api/stats") as r:
            assert (await r.json())["sessions_active"] == 0  # the edge is no viewer there


def test_the_optional_probe_decides_by_its_path_and_statuses(tmp_path: Path) -> None:
    media = tmp_path / "media"
    make_title(media, "t0")
    with nginx(media, tmp_path / "nginx") as (ngx, _log), \
            http_server(media, tmp_path / "http.log") as plain:
        edge: ServerProcess | None = None
        try:
            edge = start_process(
                ["serve", "--role", "edge", "--port", "0", "--upstream", ngx,
                 "--upstream", plain],
                {"EDGE360_EDGE_HEALTH_INTERVAL": "0.2",
                 "EDGE360_EDGE_HEALTH_PATH": "/t0/master.m3u8"})
            asyncio.run(_probe(edge.base, ngx, plain, media))
        finally:
            if edge is not None:
                assert edge.stop() == 0, edge.stderr[-2000:]


async def _probe(edge: str, ngx: str, plain: str, media: Path) -> None:
    async with aiohttp.ClientSession() as s:
        assert await metric(s, edge, "edge360_parent_up") == {ngx: 1.0, plain: 1.0}
        (media / "t0" / "master.m3u8").rename(media / "t0" / "moved.m3u8")  # probes get 404
        for _ in range(100):  # within a few probe intervals both are down
            if await metric(s, edge, "edge360_parent_up") == {ngx: 0.0, plain: 0.0}:
                break
            await asyncio.sleep(0.1)
        assert await metric(s, edge, "edge360_parent_up") == {ngx: 0.0, plain: 0.0}
        # parents down by the probe are still asked as a last resort: content still flows
        async with s.get(f"{edge}/t0/v0/seg_000.ts?sid=viewer0001") as r:
            assert r.status == 200 and len(await r.read()) > 0
        (media / "t0" / "moved.m3u8").rename(media / "t0" / "master.m3u8")
        for _ in range(100):
            if await metric(s, edge, "edge360_parent_up") == {ngx: 1.0, plain: 1.0}:
                break
            await asyncio.sleep(0.1)
        assert await metric(s, edge, "edge360_parent_up") == {ngx: 1.0, plain: 1.0}
