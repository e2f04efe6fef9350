"""Several parents with real processes: an edge with two origins serving the same media fetches each
object from exactly one of them, chosen by rendezvous hashing of the cache key (no query, no range);
a parent that stops is skipped once requests to it fail (health from real traffic) and gets its
keys back when a trial request finds it working again, and the other parent's keys never move.
Who served what is read from each origin's access log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.fleets import Fleet, fleet
from tests.fixtures.titles import make_title

ADMIN = "admin-secret-789"
TITLES = ("t0", "t1", "t2")


def all_paths(root: Path) -> list[str]:
    return sorted("/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def served(f: Fleet, name: str, start: int) -> tuple[list[str], int]:
    """Content paths in `name`'s access log from line `start` on, and the next start."""
    lines = f.log(name)
    return [ln["path"] for ln in lines[start:] if ln["path"].startswith("/t")], len(lines)


async def fetch_all(s: aiohttp.ClientSession, edge: str, paths: list[str]) -> None:
    """Every path through the edge, with viewer params and (for the big files) a range, which
    must not change the parent."""
    for i, path in enumerate(paths):
        headers = {"Range": "bytes=1000-1999"} if path.endswith("stream.ts") else {}
        async with s.get(f"{edge}{path}?sid=viewer{i:04d}", headers=headers) as r:
            assert r.status in (200, 206), (path, r.status)
            await r.read()


async def purge(s: aiohttp.ClientSession, edge: str) -> None:
    async with s.post(edge + "/admin/purge", json={"prefix": "/"},
                      headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200


async def parent_up(s: aiohttp.ClientSession, edge: str, parent: str) -> bool:
    async with s.get(edge + "/healthz") as r:
        return bool(orjson.loads(await r.read())["parents"][parent])


async def wait_parent(s: aiohttp.ClientSession, edge: str, parent: str, up: bool) -> None:
    for _ in range(200):
        async with s.get(edge + "/healthz") as r:
            assert r.status == 200  # a parent down never takes the edge out
            if orjson.loads(await r.read())["parents"][parent] is up:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{parent} never became {'up' if up else 'down'}")


async def test_each_object_has_one_parent_and_moves_only_while_it_is_down(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for title in TITLES:
        make_title(media, title)
    paths = all_paths(media)
    assert len(paths) >= 40
    env = {"EDGE360_ADMIN_TOKEN": ADMIN, "EDGE360_EDGE_PREFETCH_DEPTH": "0"}
    with fleet(tmp_path) as f:
        a = f.start("a", ["--port", "0", "--media", str(media)], env)
        b = f.start("b", ["--port", "0", "--media", str(media)], env)
        edge = f.start("edge", ["--role", "edge", "--port", "0", "--upstream", a.base,
                                "--upstream", b.base],
                       {**env, "EDGE360_EDGE_HEALTH_INTERVAL": "0.2"})
        async with aiohttp.ClientSession() as s:
            await fetch_all(s, edge.base, paths)
            at_a, na = served(f, "a", 0)
            at_b, nb = served(f, "b", 0)
            owned_a, owned_b = set(at_a), set(at_b)
            assert owned_a and owned_b and not owned_a & owned_b
            assert owned_a | owned_b == set(paths)
            assert len(at_a) + len(at_b) == len(paths)  # one upstream fetch per object

            # the same objects again (cache purged): the same parents
            await purge(s, edge.base)
            await fetch_all(s, edge.base, paths)
            again_a, na = served(f, "a", na)
            again_b, nb = served(f, "b", nb)
            assert (set(again_a), set(again_b)) == (owned_a, owned_b)

            # A stops: requests for its keys fail over to B (no viewer sees an error), and the
            # failures themselves mark A down; B's keys stay at B
            a_port = a.base.rsplit(":", 1)[1]
            assert a.stop() == 0
            await purge(s, edge.base)
            await fetch_all(s, edge.base, paths)
            down_b, nb = served(f, "b", nb)
            assert set(down_b) == set(paths)
            await wait_parent(s, edge.base, a.base, up=False)

            # A comes back on the same port: within a health interval one request for a key it
            # owns is tried there, it answers, and its keys move back; B keeps exactly its own
            f.start("a", ["--port", a_port, "--media", str(media)], env)
            owned = sorted(owned_a)[0]
            for _ in range(100):
                await purge(s, edge.base)
                await fetch_all(s, edge.base, [owned])
                if await parent_up(s, edge.base, a.base):
                    break
                await asyncio.sleep(0.1)
            await wait_parent(s, edge.base, a.base, up=True)
            _, na = served(f, "a", na)
            _, nb = served(f, "b", nb)
            await purge(s, edge.base)
            await fetch_all(s, edge.base, paths)
            back_a, na = served(f, "a", na)
            back_b, nb = served(f, "b", nb)
            assert (set(back_a), set(back_b)) == (owned_a, owned_b)
