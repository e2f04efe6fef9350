"""A packaged HEVC + H.264 title through a real origin and edge: hls.js in Chromium (which has no
HEVC decoder here) plays the H.264 rungs of the mixed master, and ffmpeg decodes the HEVC rungs
and their trick-play frames. The bundled demo plays in Chromium the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from edge360.hls.package import package
from edge360.hls.playlist import parse_master, parse_media
from tests.fixtures.browser import play
from tests.fixtures.edges import edge, get, origin
from tests.fixtures.servers import DEMO, ServerProcess, start_process
from tests.fixtures.titles import publish, source_film
from tests.fixtures.tools import require_hls, require_tool

SECONDS = 6


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media root holding the title `mixed`: HEVC and H.264 rungs in one master."""
    require_tool("ffprobe")
    root = tmp_path_factory.mktemp("media")
    source = source_film(tmp_path_factory.mktemp("src") / "source.mp4", SECONDS)
    package(source, root / "mixed", codecs="h264,hevc", ladder_spec="240p:300k:64k,144p:150k:64k",
            segment_seconds=2.0, chunk_seconds=4.0, preset="superfast")
    publish(root)  # packaged long ago: an origin serves it at once
    return root


def _play_through_an_edge(media_root: Path, src: str, profile: Path) -> dict[str, object]:
    require_hls()
    servers: list[ServerProcess] = []
    try:
        servers.append(start_process(["serve", "--port", "0", "--media", str(media_root)]))
        servers.append(start_process(["serve", "--role", "edge", "--port", "0",
                                      "--upstream", servers[0].base]))
        base = servers[1].base
        return play(f"{base}/player?src={src}&maxHeight=360", f"{base}/api/stats", profile)
    finally:
        for sp in reversed(servers):
            sp.stop()


def _assert_h264_only(result: dict[str, object], title: str) -> None:
    assert isinstance(result["currentTime"], float) and result["currentTime"] > 3
    assert not result["pageErrors"], result["pageErrors"]
    media = result["media"]
    assert isinstance(media, list)
    fetched = [m["path"] for m in media if m["path"].endswith((".m4s", ".mp4"))]
    assert fetched, media
    assert all(p.startswith(f"/{title}/h264_") for p in fetched), fetched  # never an HEVC byte
    assert all(m["status"] in (200, 206) for m in media), media


def test_hlsjs_plays_the_h264_rungs_of_the_mixed_master(media: Path, tmp_path: Path) -> None:
    result = _play_through_an_edge(media, "/mixed/master.m3u8", tmp_path / "profile")
    _assert_h264_only(result, "mixed")
    rendition = result["rendition"]
    assert isinstance(rendition, dict) and rendition["height"] in (240, 144)


def test_hlsjs_plays_the_bundled_demo(tmp_path: Path) -> None:
    assert (DEMO / "demo" / "master.m3u8").is_file(), "run scripts/make_demo.sh"
    result = _play_through_an_edge(DEMO, "/demo/master.m3u8", tmp_path / "profile")
    _assert_h264_only(result, "demo")


async def _probe(url: str) -> tuple[str, int]:
    """(codec, frames decoded) of the first video stream at `url`, by ffprobe over HTTP."""
    proc = await asyncio.create_subprocess_exec(
        require_tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
        "-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0 and err == b"", err.decode()[-2000:]
    codec, frames = out.decode().split()[0].split(",")
    return codec, int(frames)


async def test_ffmpeg_decodes_the_hevc_rungs_through_an_edge(media: Path) -> None:
    title = media / "mixed"
    hevc = [v.uri for v in parse_master((title / "master.m3u8").read_text()).variants
            if v.role == "variant" and v.codecs and v.codecs.startswith("hvc1.")]
    assert len(hevc) == 2
    async with origin(media) as o, edge([o]) as e, aiohttp.ClientSession() as s:
        for uri in hevc:
            for playlist in (uri, uri.replace("index.m3u8", "index_br.m3u8")):
                assert await _probe(f"{e}/mixed/{playlist}") == ("hevc", SECONDS * 25)
            # trick play: each keyframe's byte range, fetched through the edge, is the bytes on
            # disk, and the same bytes twice (the second time from the edge's cache)
            rung = uri.split("/")[0]
            frames = parse_media((title / rung / "iframes_br.m3u8").read_text()).segments
            for frame in frames:
                assert frame.byterange is not None
                offset, length = frame.byterange
                want = (title / rung / frame.path).read_bytes()[offset:offset + length]
                for _ in range(2):
                    status, headers, body = await get(
                        s, f"{e}/mixed/{rung}/{frame.path}",
                        {"Range": f"bytes={offset}-{offset + length - 1}"})
                    assert status == 206 and body == want and headers["X-Cache"] in (
                        "HIT", "MISS")


async def test_the_origin_serves_every_file_of_a_cmaf_title(media: Path) -> None:
    """fMP4 init sections, .m4s segments, single files by range and I-frame playlists are in
    the catalog, with their media types."""
    title = media / "mixed"
    single = (title / "hevc_240p" / "single.mp4").read_bytes()
    async with origin(media) as o, aiohttp.ClientSession() as s:
        for path, media_type in (("master.m3u8", "application/vnd.apple.mpegurl"),
                                 ("master_br.m3u8", "application/vnd.apple.mpegurl"),
                                 ("hevc_240p/iframes.m3u8", "application/vnd.apple.mpegurl"),
                                 ("h264_144p/iframes_br.m3u8", "application/vnd.apple.mpegurl"),
                                 ("hevc_240p/init.mp4", "video/mp4"),
                                 ("hevc_240p/seg_00000.m4s", "video/mp4")):
            status, headers, body = await get(s, f"{o}/mixed/{path}")
            assert status == 200 and headers["Content-Type"].startswith(media_type), path
            if not path.endswith(".m3u8"):
                assert body == (title / path).read_bytes()
        status, _, body = await get(s, f"{o}/mixed/hevc_240p/single.mp4",
                                    {"Range": "bytes=100-199"})
        assert status == 206 and body == single[100:200]
