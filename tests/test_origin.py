"""The origin against real files: ranges, conditionals, HEAD, CORS, lifetimes, titles, safety."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.fixtures.servers import DEMO, make_config, running_app, start_process
from tests.fixtures.titles import add_files, publish
from tests.fixtures.tools import require_tool


def origin_config(media: Path, **flags: object) -> object:
    return make_config({"origin.media": str(media), "origin.rescan_interval": 0.2, **flags})


async def fetch(session: aiohttp.ClientSession, url: str, method: str = "GET",
                **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.request(method, url, headers=headers, allow_redirects=False) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


RANGE_CASES = [
    ("bytes=0-99", 206, (0, 99)),
    ("bytes=100-", 206, (100, None)),
    ("bytes=-500", 206, (-500, None)),
    ("bytes=0-0", 206, (0, 0)),
    ("bytes=5-999999999", 206, (5, None)),
    ("bytes=999999999-", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=abc", 200, None),
    ("bytes=5-3", 200, None),
    ("items=0-5", 200, None),
    ("bytes=0-", 206, (0, None)),
]


@pytest.mark.parametrize(("range_header", "status", "span"), RANGE_CASES)
async def test_range_matrix(tiny_media: Path, range_header: str, status: int,
                            span: tuple[int, int | None] | None) -> None:
    data = (tiny_media / "tiny" / "v0" / "seg_000.ts").read_bytes()
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        code, headers, body = await fetch(s, base + "/tiny/v0/seg_000.ts", Range=range_header)
    assert code == status
    assert code == 416 or headers["Accept-Ranges"] == "bytes"
    if status == 206:
        assert span is not None
        start, end = span
        expected = data[start:] if end is None else data[start:end + 1]
        assert body == expected
        first = start if start >= 0 else len(data) + start
        assert headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    elif status == 416:
        assert headers["Content-Range"] == f"bytes */{len(data)}"
    else:
        assert body == data


async def test_thousand_ranges_cost_at_most_one_response(tiny_media: Path) -> None:
    data = (tiny_media / "tiny" / "v0" / "seg_001.ts").read_bytes()
    ranges = ",".join(f"{i}-{i + 50}" for i in range(0, 1000 * 7, 7))
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        code, _, body = await fetch(s, base + "/tiny/v0/seg_001.ts", Range="bytes=" + ranges)
        code2, h2, body2 = await fetch(s, base + "/tiny/v0/seg_001.ts",
                                       Range="bytes=0-9,100-109,1000-1009")
    assert code in (200, 206)
    assert len(body) <= len(data) + 2048
    assert code2 == 206 and h2["Content-Type"].startswith("multipart/byteranges; boundary=")
    boundary = h2["Content-Type"].split("boundary=")[1]
    parts = body2.split(b"--" + boundary.encode())
    assert len(parts) == 5  # preamble, 3 parts, closing
    assert parts[1].endswith(b"\r\n\r\n" + data[0:10] + b"\r\n")
    assert b"Content-Range: bytes 100-109/" in parts[2]


async def test_conditionals_and_if_range(tiny_media: Path) -> None:
    url_path = "/tiny/v0/seg_002.ts"
    data = (tiny_media / "tiny" / "v0" / "seg_002.ts").read_bytes()
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        url = base + url_path
        code, h, _ = await fetch(s, url)
        etag, last_modified = h["ETag"], h["Last-Modified"]
        assert code == 200 and re.fullmatch(r'"[^"]+"', etag)  # strong validator
        assert (await fetch(s, url, **{"If-None-Match": etag}))[0] == 304
        assert (await fetch(s, url, **{"If-None-Match": f'"x", W/{etag}'}))[0] == 304
        assert (await fetch(s, url, **{"If-None-Match": '"other"'}))[0] == 200
        assert (await fetch(s, url, **{"If-Modified-Since": last_modified}))[0] == 304
        assert (await fetch(s, url, **{"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}))[
            0] == 200
        assert (await fetch(s, url, **{"If-Match": '"nope"'}))[0] == 412
        assert (await fetch(s, url, **{"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}))[
            0] == 412
        code, h, body = await fetch(s, url, Range="bytes=0-9", **{"If-Range": etag})
        assert code == 206 and body == data[:10]
        code, h, body = await fetch(s, url, Range="bytes=0-9", **{"If-Range": '"stale"'})
        assert code == 200 and body == data
        code, h, body = await fetch(s, url, Range="bytes=0-9", **{"If-Range": last_modified})
        assert code == 206
        not_modified = await fetch(s, url, **{"If-None-Match": etag})
        assert not_modified[1]["ETag"] == etag and not_modified[2] == b""


async def test_head_matches_get(tiny_media: Path) -> None:
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        for path in ("/tiny/v0/seg_000.ts", "/tiny/v0/index.m3u8?sid=abcdefgh12",
                     "/tiny/br/all.ts"):
            g = await fetch(s, base + path)
            h = await fetch(s, base + path, "HEAD")
            assert h[0] == g[0] == 200
            assert h[2] == b""
            for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control",
                         "Accept-Ranges", "Last-Modified"):
                assert h[1].get(name) == g[1].get(name), (path, name)


async def test_cors_and_preflight(tiny_media: Path) -> None:
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        _, h, _ = await fetch(s, base + "/tiny/v0/seg_000.ts", Origin="https://player.example")
        assert h["Access-Control-Allow-Origin"] == "*"
        assert "Content-Range" in h["Access-Control-Expose-Headers"]
        assert "Content-Length" in h["Access-Control-Expose-Headers"]
        code, h, _ = await fetch(s, base + "/tiny/v0/seg_000.ts", "OPTIONS",
                                 Origin="https://player.example",
                                 **{"Access-Control-Request-Method": "GET",
                                    "Access-Control-Request-Headers": "range"})
        assert code == 204
        assert "Range" in h["Access-Control-Allow-Headers"]
        assert "GET" in h["Access-Control-Allow-Methods"]
        # a player sending CMCD as headers (CTA-5004 §2) is preflighted for them
        allowed = {x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")}
        assert {"cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"} <= allowed


async def test_cache_control_per_kind(tiny_media: Path) -> None:
    live = tiny_media / "tiny" / "live"
    live.mkdir()
    (live / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:4.0,\n../v0/seg_000.ts\n")
    master = tiny_media / "tiny" / "master.m3u8"
    master.write_text(master.read_text() + '#EXT-X-STREAM-INF:BANDWIDTH=1000\nlive/index.m3u8\n')
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        _, seg, _ = await fetch(s, base + "/tiny/v0/seg_000.ts")
        _, vod, _ = await fetch(s, base + "/tiny/v0/index.m3u8")
        _, live_h, _ = await fetch(s, base + "/tiny/live/index.m3u8")
        _, mst, _ = await fetch(s, base + "/tiny/master.m3u8")
    assert "immutable" in seg["Cache-Control"] and "max-age=31536000" in seg["Cache-Control"]
    assert "immutable" in vod["Cache-Control"]
    assert "max-age=2" in live_h["Cache-Control"] and "immutable" not in live_h["Cache-Control"]
    assert "max-age=30" in mst["Cache-Control"]
    # rewritten for a viewer: never stored by a shared cache
    for h in (vod, live_h, mst):
        assert h["Cache-Control"].startswith("private")


async def test_titles_broken_reported_and_new_titles_appear(tiny_media: Path,
                                                            tiny_master: Path) -> None:
    broken = tiny_media / "broken"
    broken.mkdir()
    (broken / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nmissing.m3u8\n")
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        _, _, body = await fetch(s, base + "/api/titles")
        listing = orjson.loads(body)
        assert [t["name"] for t in listing["titles"]] == ["tiny"]
        assert "broken" in listing["broken"]
        assert (await fetch(s, base + "/broken/master.m3u8"))[0] == 404
        assert (await fetch(s, base + "/tiny/master.m3u8"))[0] == 200
        # a title dropped into the media root appears without a restart
        await asyncio.to_thread(os.rename, tiny_media / "tiny", tiny_media / "tmp-copy")
        await asyncio.to_thread(os.rename, tiny_media / "tmp-copy", tiny_media / "late")
        for _ in range(50):
            if (await fetch(s, base + "/late/master.m3u8"))[0] == 200:
                break
            await asyncio.sleep(0.1)
        assert (await fetch(s, base + "/late/master.m3u8"))[0] == 200
        assert (await fetch(s, base + "/tiny/master.m3u8"))[0] == 404


HOSTILE = [
    "/tiny/../tiny/master.m3u8", "/tiny/%2e%2e/tiny/master.m3u8", "/tiny/%252e%252e/x.m3u8",
    "/tiny/v0%2f..%2fmaster.m3u8", "/tiny/v0\\..\\master.m3u8", "/tiny/master.m3u8%00.ts",
    "/" + "a/" * 600 + "x.ts", "/tiny//master.m3u8", "/%2e%2e/%2e%2e/etc/passwd",
    "/tiny/..%c0%af..%c0%afetc/passwd",
]


@pytest.mark.parametrize("path", HOSTILE)
async def test_traversal_is_refused(tiny_media: Path, path: str) -> None:
    async with (running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s,
                s.get(URL(base + path, encoded=True)) as r):
        assert r.status in (400, 404)
        assert b"EXTM3U" not in await r.read()


async def test_only_media_kinds_and_never_hidden_or_outside(tiny_media: Path,
                                                            tmp_path: Path) -> None:
    title = tiny_media / "tiny"
    (title / ".secret.ts").write_bytes(b"hidden")
    (title / "notes.txt").write_text("not media")
    outside = tmp_path / "outside.ts"
    outside.write_bytes(b"outside the root")
    (title / "escape.ts").symlink_to(outside)
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        for path in ("/tiny/.secret.ts", "/tiny/notes.txt", "/tiny/escape.ts", "/nope/x.ts",
                     "/tiny/master.m3u8/x"):
            code, _, body = await fetch(s, base + path)
            assert code == 404, path
            assert b"outside" not in body and b"hidden" not in body
        assert (await fetch(s, base + "/tiny/v0/seg_000.ts", "DELETE"))[0] == 405


@pytest.mark.parametrize("master", ["master.m3u8", "master_br.m3u8"])
async def test_ffmpeg_reads_the_demo_through_the_origin(master: str) -> None:
    ffmpeg = require_tool("ffmpeg")
    config = make_config({"origin.media": str(DEMO)})
    async with running_app(config) as base:
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-v", "error", "-i", f"{base}/demo/{master}", "-map", "0", "-c", "copy",
            "-f", "null", "-", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert err.strip() == b"", err.decode()[-2000:]


async def test_a_file_gone_since_the_scan_is_a_404_not_a_broken_200(tiny_media: Path) -> None:
    add_files(tiny_media / "tiny", {"v0/big.ts": os.urandom(600_000)})  # beyond memory: a file
    big = tiny_media / "tiny" / "v0" / "big.ts"
    config = origin_config(tiny_media, **{"origin.rescan_interval": 0})
    async with running_app(config) as base, aiohttp.ClientSession() as s:
        assert (await fetch(s, base + "/tiny/v0/big.ts"))[0] == 200
        big.unlink()
        code, _, _ = await fetch(s, base + "/tiny/v0/big.ts")
        assert code == 404
    # the file is opened before any head is written: a file gone answers 404 (never a 200 with
    # a wrong body, never a cut connection); other requests are unharmed, and after the next
    # rescan (SIGHUP here) it stays 404
    big.write_bytes(os.urandom(600_000))
    publish(big)
    sp = start_process(["serve", "--port", "0", "--media", str(tiny_media)])
    try:
        async with aiohttp.ClientSession() as s:
            assert (await fetch(s, sp.base + "/tiny/v0/big.ts"))[0] == 200
            big.unlink()

            async def status() -> int:
                return (await fetch(s, sp.base + "/tiny/v0/big.ts"))[0]

            assert await status() == 404
            assert (await fetch(s, sp.base + "/tiny/v0/seg_000.ts"))[0] == 200
            os.kill(sp.proc.pid, signal.SIGHUP)
            for _ in range(100):  # bounded wait for the rescan
                if await status() == 404:
                    break
                await asyncio.sleep(0.05)
            assert await status() == 404
    finally:
        assert sp.stop() == 0


async def test_a_live_playlist_never_names_a_segment_the_origin_would_404(tmp_path: Path) -> None:
    """A live playlist is read again within a second of its change, while the media root is
    rescanned only every rescan_interval (off here): the segments it newly names are indexed
    before it is served, so they answer 200 with their bytes at once; one named but not yet
    on disk stays 404 until it is written and the playlist changes again."""
    live = tmp_path / "media" / "live"
    (live / "v0").mkdir(parents=True)
    (live / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=400000\nv0/i.m3u8\n")

    def window(first: int, count: int = 3) -> None:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, first + count):
            lines += ["#EXTINF:2.0,", f"s{n}.ts"]
        tmp = live / "v0" / ".i.m3u8.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, live / "v0" / "i.m3u8")

    for n in range(3):
        (live / "v0" / f"s{n}.ts").write_bytes(bytes([0x47, n]) * 188)
    window(0)
    config = origin_config(tmp_path / "media", **{"origin.rescan_interval": 0})
    async with running_app(config) as base, aiohttp.ClientSession() as s:
        assert (await fetch(s, base + "/live/v0/i.m3u8"))[0] == 200
        (live / "v0" / "s3.ts").write_bytes(bytes([0x47, 3]) * 188)
        window(1, count=3 + 1)                       # names s3 (written) and s4 (not yet)
        await asyncio.sleep(1.1)                     # past the playlist's one-second recheck
        code, _, text = await fetch(s, base + "/live/v0/i.m3u8")
        assert code == 200 and b"s3.ts" in text and b"s4.ts" in text
        code, headers, body = await fetch(s, base + "/live/v0/s3.ts")
        assert (code, body) == (200, bytes([0x47, 3]) * 188)
        assert headers["Content-Type"] == "video/mp2t"
        assert (await fetch(s, base + "/live/v0/s4.ts"))[0] == 404
        (live / "v0" / "s4.ts").write_bytes(bytes([0x47, 4]) * 188)
        window(2, count=3)
        await asyncio.sleep(1.1)
        assert (await fetch(s, base + "/live/v0/i.m3u8"))[0] == 200
        code, _, body = await fetch(s, base + "/live/v0/s4.ts")
        assert (code, body) == (200, bytes([0x47, 4]) * 188)
