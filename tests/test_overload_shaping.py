"""Shaping by egress on a real node (docs/OVERLOAD.md, "Shaping"): once the sessions' projected
egress passes 90 % of server.egress_limit, a new viewer's master leaves out the renditions above
what still fits, an existing viewer keeps its ladder, and the playlists carry CMSD-Dynamic with
`mb` where a player on another origin can read it; the shaping is counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from tests.fixtures.servers import make_config, running_node
from tests.fixtures.titles import Rendition, make_title
from tests.test_overload_admission import get, metric

LADDER = (("lo", 1_000_000), ("mid", 2_000_000), ("hi", 4_000_000))


def make_ladder(root: Path, name: str = "film") -> Path:
    """A title of three renditions (BANDWIDTH 1, 2 and 4 Mbit/s) of three 4 s segments each."""
    make_title(root, name, [Rendition(rendition, 3, 2000, growth=0, bandwidth=bandwidth,
                                      codecs="avc1.64001f,mp4a.40.2", segment="s{}.ts")
                            for rendition, bandwidth in LADDER], byteranges=None, seed=3)
    return root


def variants(body: bytes) -> list[str]:
    return [ln.split("?")[0] for ln in body.decode().splitlines() if ln and ln[0] != "#"]


async def test_new_viewers_get_the_rungs_that_fit_existing_ones_keep_theirs(
        tmp_path: Path) -> None:
    media = make_ladder(tmp_path / "media")
    cfg = make_config({"origin.media": str(media), "server.egress_limit": 4_400_000}, {})
    async with running_node(cfg) as (base, _), aiohttp.ClientSession() as s:
        status, headers, first = await get(s, base + "/film/master.m3u8")
        assert status == 200 and variants(first) == ["lo/index.m3u8", "mid/index.m3u8",
                                                     "hi/index.m3u8"]
        assert "CMSD-Dynamic" not in headers  # nobody watches yet: not shaping
        query = first.decode().split("hi/index.m3u8?", 1)[1].split("\n", 1)[0]
        assert (await get(s, f"{base}/film/hi/index.m3u8?{query}"))[0] == 200
        assert (await get(s, f"{base}/film/hi/s0.ts?{query}"))[0] == 200
        # one viewer on 4 Mbit/s of a 4.4 Mbit/s budget: past 90 %, 0.4 left, nothing fits
        stats: dict[str, object] = {}
        for _ in range(50):
            stats = orjson.loads((await get(s, base + "/api/stats"))[2])
            if stats["egress_projected"] == 4_000_000:
                break
            await asyncio.sleep(0.1)
        assert stats["egress_limit"] == 4_400_000 and stats["egress_cap"] == 1_000_000
        status, headers, shaped = await get(s, base + "/film/master.m3u8")
        assert status == 200 and variants(shaped) == ["lo/index.m3u8"]
        assert headers["CMSD-Dynamic"] == '"edge360";mb=1000'
        assert "CMSD-Dynamic" in headers["Access-Control-Expose-Headers"]
        # the viewer already watching asks for its master again: its ladder is whole
        status, _, again = await get(s, f"{base}/film/master.m3u8?{query}")
        assert status == 200 and len(variants(again)) == 3
        status, headers, _ = await get(s, f"{base}/film/lo/index.m3u8?{query}")
        assert headers["CMSD-Dynamic"] == '"edge360";mb=1000'
        # a playlist the viewer was answered before shaping began is finished as the node is now
        status, headers, _ = await get(s, f"{base}/film/hi/index.m3u8?{query}")
        assert status == 200 and headers["CMSD-Dynamic"] == '"edge360";mb=1000'
        assert await metric(s, base, "edge360_shaped_playlists_total") == 1
        assert await metric(s, base, "edge360_egress_projected_bytes_per_second") == 500_000
