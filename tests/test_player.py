"""The /player page: query validation and escaping, its CSP, its static files (hls.js from npm),
that it opens no session, and, in headless Chromium, that it plays a title through a real edge in
front of a real origin while the edge counts exactly one viewer."""

from __future__ import annotations

import html
import json
import re
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge360.ops import player
from edge360.ops.player import BadPlayerQuery, PlayerQuery, find_hls, parse_query
from tests.fixtures.browser import play
from tests.fixtures.servers import ServerProcess, make_config, running_app, start_process
from tests.fixtures.tools import require_hls

CONFIG_RE = re.compile(r'<main id="player" data-config="([^"]*)">')


def page_config(body: str) -> dict[str, object]:
    m = CONFIG_RE.search(body)
    assert m, body
    config = json.loads(html.unescape(m.group(1)))
    assert isinstance(config, dict)
    return config


# ---- the query, pure -------------------------------------------------------------------------

@pytest.mark.parametrize(("src", "height", "expected"), [
    (None, None, PlayerQuery("/demo/master.m3u8", None, None)),
    ("", "", PlayerQuery("/demo/master.m3u8", None, None)),
    ("/tiny/master.m3u8", "360", PlayerQuery("/tiny/master.m3u8", 360, None)),
    ("/a b".replace(" ", "%20"), None, PlayerQuery("/a%20b", None, None)),
    ("/x\"><script>alert(1)</script>", None,
     PlayerQuery("/x\"><script>alert(1)</script>", None, None)),
    ("https://CDN.example:8443/t/master.m3u8?token=a", None,
     PlayerQuery("https://CDN.example:8443/t/master.m3u8?token=a", None,
                 "https://cdn.example:8443")),
    ("http://127.0.0.1:8080/demo/master.m3u8", "2160",
     PlayerQuery("http://127.0.0.1:8080/demo/master.m3u8", 2160, "http://127.0.0.1:8080")),
])
def test_query_accepted(src: str | None, height: str | None, expected: PlayerQuery) -> None:
    assert parse_query(src, height) == expected


@pytest.mark.parametrize(("src", "height"), [
    ("javascript:alert(1)", None),
    ("JaVaScRiPt:alert(1)", None),
    ("data:text/html,<script>alert(1)</script>", None),
    ("//evil.example/master.m3u8", None),
    ("/\\evil.example/master.m3u8", None),
    ("ftp://host/master.m3u8", None),
    ("http://user:pw@host/master.m3u8", None),
    ("http://host;script-src */x.m3u8", None),
    ("http://[::1]:8080/x.m3u8", None),
    ("http://host:99999/x.m3u8", None),
    ("master.m3u8", None),
    (" /demo/master.m3u8", None),
    ("/demo/\nmaster.m3u8", None),
    ("/" + "a" * 3000, None),
    ("/demo/master.m3u8", "0"),
    ("/demo/master.m3u8", "-1"),
    ("/demo/master.m3u8", "360p"),
    ("/demo/master.m3u8", "1e3"),
])
def test_query_refused(src: str, height: str | None) -> None:
    with pytest.raises(BadPlayerQuery):
        parse_query(src, height)


@pytest.mark.parametrize(("cmcd", "expected"), [
    (None, None), ("", None), ("query", "query"), ("headers", "headers")])
def test_cmcd_mode_accepted(cmcd: str | None, expected: str | None) -> None:
    assert parse_query("/t/master.m3u8", None, cmcd).cmcd == expected


@pytest.mark.parametrize("cmcd", ["yes", "HEADERS", "<script>", "1"])
def test_cmcd_mode_refused(cmcd: str) -> None:
    with pytest.raises(BadPlayerQuery):
        parse_query("/t/master.m3u8", None, cmcd)


async def test_page_hands_the_cmcd_mode_to_hls_js(tiny_media: Path) -> None:
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        async with s.get(base + "/player", params={"cmcd": "headers"}) as r:
            assert page_config(await r.text())["cmcd"] == "headers"
        async with s.get(base + "/player", params={"cmcd": "bogus"}) as r:
            assert r.status == 400


def test_hls_found_in_vendor_copy_then_checkout(tmp_path: Path) -> None:
    vendored, checkout = tmp_path / "vendor.js", tmp_path / "checkout.js"
    assert find_hls((vendored, checkout)) is None
    checkout.write_text("/* hls */")
    assert find_hls((vendored, checkout)) == checkout
    vendored.write_text("/* hls */")
    assert find_hls((vendored, checkout)) == vendored


# ---- the page over HTTP ----------------------------------------------------------------------

def origin_config(media: Path) -> object:
    return make_config({"origin.media": str(media)})


async def test_page_escapes_src_and_sends_a_strict_csp(tiny_media: Path) -> None:
    evil = '/x"><script>alert(1)</script><img/src=x/onerror=alert(2)>.m3u8'
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        async with s.get(base + "/player", params={"src": evil, "maxHeight": "360"}) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            body = await r.text()
        async with s.get(base + "/player") as r:
            default_body = await r.text()
            default = page_config(default_body)
        async with s.get(base + "/player",
                         params={"src": "https://cdn.example/t/master.m3u8"}) as r:
            cross_csp = r.headers["Content-Security-Policy"]
    # the hostile src added no markup: not one tag more than the default page
    assert "<script>alert" not in body and "<img" not in body
    assert body.count("<") == default_body.count("<") and body.count('"') == default_body.count('"')
    assert page_config(body) == {"src": evil, "maxHeight": 360, "stats": "/api/stats"}
    assert default["src"] == "/demo/master.m3u8" and default["maxHeight"] is None
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "connect-src 'self' https://cdn.example;" in cross_csp
    # no inline script or style anywhere: the CSP would block it
    assert re.findall(r"<script[^>]*>", body) == [
        '<script src="/static/vendor/hls.min.js" defer>', '<script src="/static/player.js" defer>']
    assert "style=" not in body and "<style" not in body
    assert "http://" not in body and "https://" not in body  # no CDN: the page works offline


@pytest.mark.parametrize("query", ["src=javascript:alert(1)", "src=//evil.example/x.m3u8",
                                   "maxHeight=abc"])
async def test_bad_query_is_400(tiny_media: Path, query: str) -> None:
    async with (running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s,
                s.get(f"{base}/player?{query}") as r):
        assert r.status == 400
        assert "src must be" in (await r.json())["error"]


async def test_static_files_and_hls_served_by_the_node(tiny_media: Path) -> None:
    hls = require_hls()
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        for path in ("/static/player.js", "/static/player.css", "/static/vendor/hls.min.js"):
            async with s.get(base + path) as r:
                assert r.status == 200, path
                body = await r.read()
                etag = r.headers["ETag"]
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.content_type in ("text/javascript", "text/css")
            async with s.get(base + path, headers={"If-None-Match": etag}) as r:
                assert r.status == 304, path
            async with s.head(base + path) as r:
                assert r.status == 200 and int(r.headers["Content-Length"]) == len(body)
        async with s.get(base + "/static/vendor/hls.min.js") as r:
            assert await r.read() == hls.read_bytes()
        async with s.get(base + "/static/nothing.js") as r:
            assert r.status == 404


async def test_player_and_its_files_open_no_session(tiny_media: Path) -> None:
    async with running_app(origin_config(tiny_media)) as base, aiohttp.ClientSession() as s:
        for path in ("/player", "/player?src=/tiny/master.m3u8", "/static/player.js",
                     "/static/player.css", "/static/vendor/hls.min.js", "/api/stats"):
            async with s.get(base + path) as r:
                await r.read()
        async with s.get(base + "/api/stats") as r:
            stats = await r.json()
    assert stats["sessions_active"] == 0 and stats["views_total"] == 0


async def test_edge_serves_the_page_too(tiny_media: Path) -> None:
    async with running_app(origin_config(tiny_media)) as origin_url:
        config = make_config({"server.role": "edge", "edge.upstreams": [origin_url]})
        async with running_app(config) as base, aiohttp.ClientSession() as s:
            async with s.get(base + "/player?src=/tiny/master.m3u8") as r:
                assert r.status == 200 and "X-Cache" not in r.headers
                assert page_config(await r.text())["src"] == "/tiny/master.m3u8"
            async with s.get(base + "/static/player.js") as r:
                assert r.status == 200 and "X-Cache" not in r.headers
            async with s.get(base + "/api/stats") as r:
                assert (await r.json())["sessions_active"] == 0


# ---- in the browser, through a real edge -----------------------------------------------------

def metric_sum(base: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels` (from GET /metrics)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def stats_of(base: str) -> dict[str, object]:
    with urllib.request.urlopen(base + "/api/stats", timeout=10) as r:
        data = json.loads(r.read())
    assert isinstance(data, dict)
    return data


def test_plays_through_the_edge_counting_one_viewer(tiny_media: Path, tmp_path: Path) -> None:
    require_hls()
    origin: ServerProcess | None = None
    edge: ServerProcess | None = None
    try:
        origin = start_process(["serve", "--port", "0", "--media", str(tiny_media)])
        edge = start_process(["serve", "--role", "edge", "--port", "0",
                              "--upstream", origin.base])
        cache_before = metric_sum(edge.base, "edge360_cache_requests_total")
        segments_before = metric_sum(edge.base, "edge360_requests_total", kind="segment")
        result = play(f"{edge.base}/player?src=/tiny/master.m3u8&maxHeight=360",
                      f"{edge.base}/api/stats", tmp_path / "chromium-profile")
        origin_stats = stats_of(origin.base)
        cache_after = metric_sum(edge.base, "edge360_cache_requests_total")
        segments_after = metric_sum(edge.base, "edge360_requests_total", kind="segment")
        origin_segments = metric_sum(origin.base, "edge360_requests_total", kind="segment")
    finally:
        for sp in (edge, origin):
            if sp is not None:
                sp.stop()

    # playback advanced, in the capped rendition, and the page showed its live numbers
    assert isinstance(result["currentTime"], float) and result["currentTime"] > 3
    rendition = result["rendition"]
    assert isinstance(rendition, dict) and rendition["height"] == 180 and rendition["bitrate"] > 0
    assert isinstance(result["bufferAhead"], float | int) and result["bufferAhead"] >= 0
    assert not result["pageErrors"], result["pageErrors"]
    assert not [e for e in result["consoleErrors"] if "Content Security Policy" in str(e)], \
        result["consoleErrors"]

    # every media response came from the edge's cache logic, and the edge fetched from the origin
    media = result["media"]
    assert isinstance(media, list)
    segs = [m for m in media if m["path"].endswith(".ts")]
    assert segs, media
    assert all(m["status"] in (200, 206) for m in media), media
    assert all(m["xCache"] in ("HIT", "MISS", "STALE") for m in media), media
    assert cache_after > cache_before
    assert segments_after >= segments_before + len(segs)
    assert origin_segments >= 1

    # one viewer: the master opened one session, every later request carried its sid, and
    # neither the page nor its /api/stats polling opened another
    sids = {m["query"] for m in media[1:]}
    assert len(sids) == 1 and next(iter(sids)).startswith("?sid="), media
    stats = result["statsWhilePlaying"]
    assert isinstance(stats, dict)
    assert stats["sessions_active"] == 1 and stats["views_total"] == 1, stats
    assert result["viewersShown"] == 1
    # the edge is a child cache to its origin: no viewer session there (docs/HTTP.md, "Tiers")
    assert origin_stats["sessions_active"] == 0, origin_stats


def test_no_cdn_in_page_sources() -> None:
    source = Path(player.__file__).read_text()
    static = Path(player.__file__).parent / "static"
    for text in (source, *(p.read_text() for p in static.glob("player.*"))):
        assert "cdn.jsdelivr" not in text and "unpkg.com" not in text and "cdnjs" not in text
