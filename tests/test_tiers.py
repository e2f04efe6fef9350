"""Tiers with real processes on loopback: viewer -> edge -> shield (an edge whose upstream is the
origin) -> origin. Viewers are counted once, at the edge; sid and token stop there; the peer token
makes the shield treat the edge as a cache and a wrong one makes it a viewer; forwarding loops
answer 508; purge and warm at a shield fan out to its child edges."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from edge360.security import tokens as auth
from tests.fixtures.edges import catch_all
from tests.fixtures.fleets import fleet
from tests.fixtures.servers import REPO, free_port
from tests.fixtures.titles import make_title
from tests.fixtures.tools import require_tool

PEER = "peer-secret-123"
ADMIN = "admin-secret-456"
KEYS = "k1:viewer-signing-secret"


async def fetch(s: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, bytes]:
    async with s.get(url, **kw) as r:
        return r.status, r.headers.copy(), await r.read()


async def stats(s: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with s.get(base + "/api/stats") as r:
        assert r.status == 200
        data = orjson.loads(await r.read())
        assert isinstance(data, dict)
        return data


@contextlib.asynccontextmanager
async def tap(parent: str) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A recording pass-through between a child edge and its parent: what the child sent (query,
    headers) and what it received (status, headers, body) for every exchange."""
    seen: list[dict[str, Any]] = []

    async def relay(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession(auto_decompress=False) as s, \
                s.request(request.method, parent + request.path_qs, headers=headers) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        seen.append({"path": request.path, "query": request.query_string,
                     "sent": dict(request.headers), "status": r.status, "got": out,
                     "body": body})
        return web.Response(status=r.status, headers=out, body=body)

    async with catch_all(relay) as base:
        yield base, seen


def uris(playlist: bytes) -> list[str]:
    return [ln for ln in playlist.decode().splitlines() if ln and not ln.startswith("#")]


async def watch(s: aiohttp.ClientSession, edge: str, keys: tuple[auth.Key, ...]) -> str:
    """One viewer: signed master, its first media playlist, two segments; returns its sid."""
    master = auth.sign_url(edge + "/demo/master.m3u8", keys, ttl=600, now=time.time())
    st, h, body = await fetch(s, master)
    assert st == 200 and h["Cache-Control"].startswith("private")
    media = uris(body)[0]
    sid = re.search(r"sid=([A-Za-z0-9_-]+)", media)
    assert sid is not None and "token=" in media
    st, _, body = await fetch(s, f"{edge}/demo/{media}")
    assert st == 200
    folder = media.split("/")[0]
    for seg in uris(body)[:2]:
        assert f"sid={sid.group(1)}" in seg
        st, _, _ = await fetch(s, f"{edge}/demo/{folder}/{seg}")
        assert st == 200
    return sid.group(1)


async def test_viewers_are_counted_at_the_edge_only(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    keys = auth.parse_keys(KEYS)
    common = {"EDGE360_PEER_TOKEN": PEER, "EDGE360_AUTH_KEYS": KEYS}
    secured = {**common, "EDGE360_AUTH_REQUIRED": "true"}
    with fleet(tmp_path) as f:
        origin = f.start("origin", ["--port", "0", "--media", str(tmp_path / "media")], common)
        shield = f.start("shield", ["--role", "edge", "--port", "0", "--upstream", origin.base],
                         secured)
        async with tap(shield.base) as (tapped, seen), aiohttp.ClientSession() as s:
            edge = f.start("edge", ["--role", "edge", "--port", "0", "--upstream", tapped],
                           secured)
            sids = {await watch(s, edge.base, keys) for _ in range(3)}
            assert len(sids) == 3
            # the shield required tokens: an unsigned viewer is refused there, the edge was not
            assert (await fetch(s, shield.base + "/demo/master.m3u8"))[0] == 403
            assert (await stats(s, edge.base))["sessions_active"] == 3
            assert (await stats(s, edge.base))["views_total"] == 3
            for parent in (shield, origin):
                got = await stats(s, parent.base)
                assert (got["sessions_active"], got["views_total"]) == (0, 0), parent.base

            # what the edge sent the shield and what it got back
            assert seen, "the edge never asked its parent"
            for x in seen:
                assert "edge360" in x["sent"]["CDN-Loop"]
                assert x["sent"]["Authorization"] == f"Bearer {PEER}"
                assert "sid" not in x["query"] and "token" not in x["query"]
                assert "CMCD" not in x["query"]
                if x["path"].endswith(".m3u8"):
                    assert x["status"] == 200
                    assert b"sid=" not in x["body"] and b"token=" not in x["body"]
                    assert "private" not in x["got"].get("Cache-Control", "")
            assert {x["path"] for x in seen} >= {"/demo/master.m3u8"}

            # sid and token never reached the shield or the origin
            for name in ("shield", "origin"):
                lines = [ln for ln in f.log(name) if ln["path"].startswith("/demo/")]
                assert lines, name
                for ln in lines:
                    assert "sid=" not in ln["query"] and "token=" not in ln["query"], (name, ln)

            # a wrong peer token is a viewer: it needs a token and is counted
            wrong = {"Authorization": "Bearer not-the-peer", "CDN-Loop": "edge360"}
            st, _, _ = await fetch(s, shield.base + "/demo/v0/index.m3u8", headers=wrong)
            assert st == 403
            signed = auth.sign_url(shield.base + "/demo/v0/index.m3u8", keys, ttl=600,
                                   now=time.time())
            st, h, body = await fetch(s, signed, headers=wrong)
            assert st == 200 and b"sid=" in body and h["Cache-Control"].startswith("private")
            assert (await stats(s, shield.base))["sessions_starting"] == 1
            st, _, _ = await fetch(s, f"{shield.base}/demo/v0/{uris(body)[0]}", headers=wrong)
            assert st == 200  # its first segment: playback started
            assert (await stats(s, shield.base))["sessions_active"] == 1
            # the right one is waived without a viewer token and still counted nowhere
            right = {"Authorization": f"Bearer {PEER}", "CDN-Loop": "edge360"}
            st, h, body = await fetch(s, shield.base + "/demo/v1/index.m3u8", headers=right)
            assert st == 200 and b"sid=" not in body
            assert "private" not in h.get("Cache-Control", "")
            assert (await stats(s, shield.base))["views_total"] == 1


async def test_forwarding_loops_answer_508(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    own, a, b = free_port(), free_port(), free_port()
    with fleet(tmp_path) as f:
        selfish = f.start("self", ["--role", "edge", "--port", str(own), "--upstream",
                                   f"http://127.0.0.1:{own}"], {})
        f.start("a", ["--role", "edge", "--port", str(a), "--upstream",
                      f"http://127.0.0.1:{b}"], {})
        f.start("b", ["--role", "edge", "--port", str(b), "--upstream",
                      f"http://127.0.0.1:{a}"], {})
        timeout = aiohttp.ClientTimeout(total=10)  # a recursion would hang past the read timeout
        async with aiohttp.ClientSession(timeout=timeout) as s:
            for base, path in ((selfish.base, "/demo/v0/seg_000.ts"),
                               (f"http://127.0.0.1:{a}", "/demo/master.m3u8"),
                               (f"http://127.0.0.1:{b}", "/demo/v1/index.m3u8")):
                st, _, body = await fetch(s, base + path)
                assert st == 508, (base, st, body)
        # each node refused the loop at its own door after at most one round
        hops = [ln for name in ("a", "b") for ln in f.log(name) if ln["status"] == 508]
        assert len(hops) <= 6


async def _purge_counts(s: aiohttp.ClientSession, url: str, body: dict[str, str]
                        ) -> dict[str, Any]:
    async with s.post(url, json=body, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200, await r.text()
        data = orjson.loads(await r.read())
        assert isinstance(data, dict)
        return data


async def test_purge_and_warm_fan_out_to_child_edges(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    env = {"EDGE360_PEER_TOKEN": PEER, "EDGE360_ADMIN_TOKEN": ADMIN,
           "EDGE360_EDGE_PREFETCH_DEPTH": "0"}
    shield_port = free_port()
    shield_url = f"http://127.0.0.1:{shield_port}"
    seg = "/demo/v0/seg_001.ts"
    with fleet(tmp_path) as f:
        origin = f.start("origin", ["--port", "0", "--media", str(tmp_path / "media")], env)
        children = [f.start(f"e{i}", ["--role", "edge", "--port", "0", "--upstream", shield_url],
                            env) for i in (1, 2)]
        kids = [c.base for c in children]
        f.start("shield", ["--role", "edge", "--port", str(shield_port), "--upstream",
                           origin.base], {**env, "EDGE360_EDGE_CHILDREN": ",".join(kids)})
        async with aiohttp.ClientSession() as s:
            for kid in kids:
                for path in ("/demo/master.m3u8", "/demo/v0/index.m3u8", seg):
                    assert (await fetch(s, kid + path))[0] == 200
                assert (await fetch(s, kid + seg))[1]["X-Cache"] == "HIT"
            answer = await _purge_counts(s, shield_url + "/admin/purge", {"prefix": "/demo/"})
            assert answer["purged"] >= 3
            assert answer["children"] == dict.fromkeys(kids, 3)
            for kid in kids:
                assert (await fetch(s, kid + seg))[1]["X-Cache"] == "MISS"

            answer = await _purge_counts(s, shield_url + "/admin/warm",
                                         {"playlist": "/demo/master.m3u8"})
            queued = answer["queued"]
            assert queued >= 11  # master, 2 media playlists, 8 segments
            assert answer["children"] == dict.fromkeys(kids, queued)
            for kid in kids:  # warmed in the background: wait (bounded) until it is stored
                cold = "/demo/v1/seg_003.ts"
                for _ in range(100):
                    async with s.get(kid + "/admin/cache", params={"path": cold},
                                     headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                        if orjson.loads(await r.read())["tiers"]:
                            break
                    await asyncio.sleep(0.1)
                assert (await fetch(s, kid + cold))[1]["X-Cache"] == "HIT"

        # a child that does not answer is reported, the others still purged
        f.procs[1].stop()
        async with aiohttp.ClientSession() as s:
            answer = await _purge_counts(s, shield_url + "/admin/purge", {"path": seg})
        assert answer["children"][kids[1]] == 1
        assert str(answer["children"][kids[0]]).startswith("error: ")


def test_local_fleet_counts_agree_with_prometheus(tmp_path: Path) -> None:
    """scripts/fleet.py in a small configuration: origin, shield, two edges, Prometheus, two
    replays; its exit status says whether the recorded fleet peak matched the replayers' truth."""
    require_tool("prometheus")
    out = tmp_path / "fleet"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fleet.py"), "--edges", "2", "--scale", "0.002",
         "--speed", "40", "--window", "9.75-9.95", "--duration", "25", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = orjson.loads((out / "fleet.json").read_text())
    assert result["truth_fleet_peak"] > 0 and result["errors"] == 0
    assert result["relative_error"] <= 0.03
    assert result["egress_bytes_by_role"]["edge"] > result["egress_bytes_by_role"]["origin"]
    assert "prometheus recorded peak" in run.stdout
    for name in ("origin", "shield", "edge0", "edge1", "prometheus"):
        assert (out / f"{name}.log").exists()
