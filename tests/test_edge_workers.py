"""An edge with `--workers 2` in front of a real origin (both `edge360 serve` processes): admin
purge is node-wide whichever worker takes it, /metrics and /api/stats agree across workers, and a
herd of misses costs at most one upstream fetch per worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.servers import start_process
from tests.fixtures.titles import make_title
from tests.test_workers import active_from_metrics

TOKEN = "admin-secret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEGMENTS = [f"/demo/{r}/seg_{i:03d}.ts" for r in ("v0", "v1") for i in range(4)]
HERD = 40
BIG = "/demo/v0/big.ts"


def fresh() -> aiohttp.ClientSession:
    """A session whose every request opens its own connection (so requests spread over workers)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with fresh() as s, s.get(url, headers=headers or {}) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.read()


async def describe(base: str, path: str) -> dict[str, object]:
    status, _, body = await fetch(f"{base}/admin/cache?path={path}", AUTH)
    assert status == 200
    data = orjson.loads(body)
    assert isinstance(data, dict)
    return data


async def held_by_workers(base: str, path: str, tries: int = 60) -> dict[int, list[str]]:
    """Which tiers each worker reports for `path` (asked over fresh connections until both
    workers answered, at most `tries` times)."""
    seen: dict[int, list[str]] = {}
    for _ in range(tries):
        d = await describe(base, path)
        tiers = d["tiers"]
        assert isinstance(tiers, list)
        seen[int(str(d["worker"]))] = [str(t) for t in tiers]
        if len(seen) == 2:
            break
    return seen


def origin_segment_requests(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("edge360_requests_total{") and 'kind="segment"' in line)


async def test_purge_stats_and_coalescing_are_node_wide(tmp_path: Path) -> None:
    big = bytes(range(256)) * 7000                  # 1.7 MiB: one whole object, not pieced
    files = make_title(tmp_path / "media", extra={BIG.removeprefix("/demo/"): big})
    origin = start_process(["serve", "--role", "origin", "--port", "0",
                            "--media", str(tmp_path / "media")])
    try:
        edge = start_process(
            ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base,
             "--workers", "2"],
            {"EDGE360_ADMIN_TOKEN": TOKEN, "EDGE360_EDGE_CACHE_DIR": str(tmp_path / "disk")})
        try:
            base = edge.base
            # warm over many connections until both workers hold every segment in memory
            for path in SEGMENTS:
                for _ in range(60):
                    status, _, body = await fetch(base + path)
                    assert status == 200 and body == files[path[len("/demo/"):]]
                    held = await held_by_workers(base, path)
                    if len(held) == 2 and all("memory" in t for t in held.values()):
                        break
                else:
                    raise AssertionError(f"{path} never reached both workers: {held}")
            # one purge, taken by one worker, empties both memories and the disk tier
            async with fresh() as s, s.post(base + "/admin/purge", headers=AUTH,
                                             data=orjson.dumps({"prefix": "/demo/"})) as r:
                assert r.status == 200
                answer = orjson.loads(await r.read())
            # distinct objects, not one per worker copy (the playlists were never asked for)
            assert answer["purged"] == len(SEGMENTS)
            for path in SEGMENTS:
                held = await held_by_workers(base, path)
                assert held == {0: [], 1: []}
            # so whichever worker answers, the first request after the purge is a MISS
            first = [await fetch(base + path) for path in SEGMENTS]
            assert [(st, xc) for st, xc, _ in first] == [(200, "MISS")] * len(SEGMENTS)

            # sessions and views are the node's, whichever worker answers
            sids = [f"node-viewer-{i:03d}" for i in range(24)]
            for sid in sids:
                for path in ("/demo/v0/index.m3u8", "/demo/v0/seg_000.ts"):
                    status, _, _ = await fetch(f"{base}{path}?sid={sid}")
                    assert status == 200
            answers = []
            for _ in range(8):
                _, _, body = await fetch(base + "/api/stats")
                stats = orjson.loads(body)
                _, _, text = await fetch(base + "/metrics")
                answers.append((stats["sessions_active"], stats["views_total"],
                                *active_from_metrics(text.decode())))
            # + 1: the warm-up requests carried no sid, one address + User-Agent session
            n = len(sids) + 1
            assert set(answers) == {(n, n, float(n), float(n))}

            # a herd of misses on one object: at most one upstream fetch per worker
            _, _, before = await fetch(origin.base + "/metrics")
            herd = await asyncio.gather(*(fetch(base + BIG) for _ in range(HERD)))
            _, _, after = await fetch(origin.base + "/metrics")
            assert all(st == 200 and body == big for st, _, body in herd)
            upstream = origin_segment_requests(after.decode()) - \
                origin_segment_requests(before.decode())
            misses = sum(1 for _, xc, _ in herd if xc == "MISS")
            assert 1 <= upstream <= 2, (upstream, misses)
            # the herd really overlapped: more waiters were answered MISS than fetches were made
            assert misses > upstream, (upstream, misses)
        finally:
            assert edge.stop() == 0
    finally:
        assert origin.stop() == 0


async def test_warm_fills_every_worker(tmp_path: Path) -> None:
    """A warm-up taken by one worker fills every worker's memory tier (no disk tier here, so
    nothing is shared): after it, each segment is a HIT whichever worker answers."""
    make_title(tmp_path / "media")
    origin = start_process(["serve", "--role", "origin", "--port", "0",
                            "--media", str(tmp_path / "media")])
    try:
        edge = start_process(
            ["serve", "--role", "edge", "--port", "0", "--upstream", origin.base,
             "--workers", "2"], {"EDGE360_ADMIN_TOKEN": TOKEN})
        try:
            base = edge.base
            async with fresh() as s, s.post(base + "/admin/warm", headers=AUTH,
                                             data=orjson.dumps({"playlist": "/demo/master.m3u8"})
                                             ) as r:
                assert r.status == 200
                answer = orjson.loads(await r.read())
            assert answer["workers"] == 2 and answer["queued"] >= len(SEGMENTS)
            for path in SEGMENTS:
                for _ in range(100):  # bounded: the warm runs in the background
                    held = await held_by_workers(base, path)
                    if held.keys() == {0, 1} and all("memory" in t for t in held.values()):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"{path} not warm in both workers: {held}")
            hits = [await fetch(base + path) for path in SEGMENTS for _ in range(4)]
            assert {(st, xc) for st, xc, _ in hits} == {(200, "HIT")}
        finally:
            assert edge.stop() == 0
    finally:
        assert origin.stop() == 0
