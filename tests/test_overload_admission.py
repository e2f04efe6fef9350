"""Admission by capacity on real nodes (docs/OVERLOAD.md, "Admission"): a full node answers a new
viewer 503 with Retry-After, a queue ticket and a queue page; admitted viewers, peers and viewers
with a fleet ticket are never refused; a queued viewer that comes back gets in once a seat
frees; the figures show in /api/stats and /metrics; the ticket never reaches a parent nor a
cache key; with --workers N the node admits exactly its capacity."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import orjson
from aiohttp import web

from edge360.security import tickets
from tests.fixtures.clock import FakeClock
from tests.fixtures.edges import fake_upstream, get
from tests.fixtures.servers import make_config, running_node, start_process
from tests.fixtures.titles import make_title

KEYS = "k1:admission-secret"


def config(media: Path, capacity: int, **env: str) -> dict[str, object]:
    return {"flags": {"origin.media": str(media), "sessions.capacity": capacity,
                      "sessions.idle_timeout": 1.0},
            "env": {"EDGE360_PEER_TOKEN": "peer-secret", **env}}


def variant(body: bytes, base: str) -> str:
    """The first variant URI of a master, absolute."""
    line = next(ln for ln in body.decode().splitlines() if ln and not ln.startswith("#"))
    return urljoin(base + "/demo/master.m3u8", line)


async def stats(s: aiohttp.ClientSession, base: str) -> dict[str, object]:
    _, _, body = await get(s, base + "/api/stats")
    data = orjson.loads(body)
    assert isinstance(data, dict)
    return data


async def metric(s: aiohttp.ClientSession, base: str, sample: str) -> float:
    _, _, body = await get(s, base + "/metrics")
    m = re.search(rf"^{re.escape(sample)} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_full_node_queues_and_admits_as_seats_free(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    c = config(tmp_path / "media", 2)
    clock = FakeClock(1_800_000_000.0)
    async with running_node(make_config(c["flags"], c["env"]), clock=clock) as (base, _), \
            aiohttp.ClientSession() as s:
        master = base + "/demo/master.m3u8"
        status, _, a = await get(s, master)
        assert status == 200
        a_media = variant(a, base)
        query = parse_qs(urlsplit(a_media).query)
        assert tickets.read(query["ticket"][0], (), clock()) is None  # signed, not by nothing
        assert (await get(s, master))[0] == 200
        # full: the third viewer is queued
        status, headers, body = await get(s, master)
        assert status == 503
        info = orjson.loads(body)
        assert info["queued"] and info["position"] == 1
        assert 2 <= int(headers["Retry-After"]) <= 60 and info["retry_after"] == int(
            headers["Retry-After"])
        assert headers["Cache-Control"] == "no-store"
        assert f"{tickets.COOKIE}={info['ticket']}" in headers["Set-Cookie"]
        assert "Retry-After" in headers["Access-Control-Expose-Headers"]
        status, headers, page = await get(s, master, {"Accept": "text/html,*/*"})
        assert status == 503 and headers["Content-Type"].startswith("text/html")
        assert b"You are in the queue" in page and b'http-equiv="refresh"' in page
        # an admitted viewer is never refused, a peer neither; a made-up sid is a new viewer
        assert (await get(s, a_media))[0] == 200
        segment = urljoin(a_media, "seg_000.ts") + "?" + urlsplit(a_media).query
        assert (await get(s, segment))[0] == 200
        assert (await get(s, master, {"Authorization": "Bearer peer-secret"}))[0] == 200
        assert (await get(s, master + "?sid=madeupsid123"))[0] == 503
        figures = await stats(s, base)
        assert figures["capacity"] == 2 and figures["sessions_queued"] == 3
        assert await metric(s, base, 'edge360_admission_total{result="admitted"}') == 2
        assert await metric(s, base, 'edge360_admission_total{result="queued"}') == 3
        assert await metric(s, base, "edge360_sessions_queued") == 3
        # the second viewer never played: its seat frees after the idle timeout; the first
        # queued viewer comes back with its ticket (its cookie does as well as the query)
        clock.advance(1.5)
        newcomer = await get(s, master)
        assert newcomer[0] == 503 and orjson.loads(newcomer[2])["position"] == 3
        status, _, _ = await get(s, master, {"Cookie": f"x=1; {tickets.COOKIE}={info['ticket']}"})
        assert status == 200
        assert (await get(s, urljoin(base, info["retry"])))[0] == 503  # that seat is taken


async def test_a_fleet_ticket_admits_a_moved_viewer_once(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    big, small = config(tmp_path / "media", 5, EDGE360_ADMISSION_KEYS=KEYS), \
        config(tmp_path / "media", 1, EDGE360_ADMISSION_KEYS=KEYS)
    foreign = config(tmp_path / "media", 1, EDGE360_ADMISSION_KEYS="k9:another-secret")
    async with running_node(make_config(big["flags"], big["env"])) as (x, _), \
            running_node(make_config(small["flags"], small["env"])) as (y, _), \
            running_node(make_config(foreign["flags"], foreign["env"])) as (z, _), \
            aiohttp.ClientSession() as s:
        status, _, _ = await get(s, y + "/demo/master.m3u8")
        assert status == 200  # y is full now
        assert (await get(s, y + "/demo/master.m3u8"))[0] == 503
        _, _, moved = await get(s, x + "/demo/master.m3u8")
        media = urlsplit(variant(moved, x))
        # admitted on x, its media playlist on y: an existing viewer there, never refused
        assert (await get(s, y + media.path + "?" + media.query))[0] == 200
        assert await metric(s, y, 'edge360_admission_total{result="admitted"}') == 1
        ticket = parse_qs(media.query)["ticket"][0]
        status, _, again = await get(s, y + "/demo/master.m3u8",
                                     {"Cookie": f"{tickets.COOKIE}={ticket}"})
        assert status == 200 and parse_qs(media.query)["sid"][0] in again.decode()
        # a node with other keys does not know the ticket: a new viewer, queued there
        assert (await get(s, z + "/demo/master.m3u8"))[0] == 200
        assert (await get(s, z + media.path + "?" + media.query))[0] == 503
        assert (await get(s, z + "/demo/master.m3u8?ticket=" + ticket))[0] == 503


async def test_the_ticket_never_reaches_a_parent_nor_the_cache_key() -> None:
    async def playlist(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv/index.m3u8\n",
                            headers={"Content-Type": "application/vnd.apple.mpegurl",
                                     "Cache-Control": "max-age=60"})
    async with fake_upstream(playlist) as (up, fake):
        cfg = make_config({"server.role": "edge", "edge.upstreams": [up],
                           "edge.cache_key_params": "*", "sessions.capacity": 10}, {})
        async with running_node(cfg) as (base, _), aiohttp.ClientSession() as s:
            for n in range(2):
                status, headers, _ = await get(
                    s, f"{base}/t/master.m3u8?ticket=t1.x{n}&sid=abcdefgh{n}&v=1",
                    {"Cookie": f"a=b; {tickets.COOKIE}=t1.y{n}"})
                assert status == 200 and headers["X-Cache"] == ("MISS", "HIT")[n]
    assert len(fake.seen) == 1
    _, path_qs, fields = fake.seen[0]
    assert path_qs == "/t/master.m3u8?v=1"
    assert fields.get("Cookie") == "a=b"


async def test_with_workers_the_node_admits_exactly_its_capacity(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    node = start_process(["serve", "--port", "0", "--media", str(tmp_path / "media"),
                          "--workers", "2"], {"EDGE360_SESSIONS_CAPACITY": "5"})
    try:
        async def one() -> int:
            # a connection each, so the kernel spreads them over both workers
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    force_close=True)) as s:
                return (await get(s, node.base + "/demo/master.m3u8"))[0]
        codes = await asyncio.gather(*(one() for _ in range(20)))
        assert sorted(codes) == [200] * 5 + [503] * 15
        async with aiohttp.ClientSession() as s:
            figures = await stats(s, node.base)
        assert figures["capacity"] == 5 and figures["sessions_queued"] == 15
        assert figures["sessions_starting"] == 5
    finally:
        assert node.stop() == 0
