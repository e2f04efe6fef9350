"""Tests of edge360.titles: check_title and scan_media_root on titles built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge360.core.errors import InvalidMedia
from edge360.hls.playlist import parse_media, segments
from edge360.hls.titles import check_title, scan_media_root
from tests.fixtures.titles import add_files, encoded_title

MASTER = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,\
CODECS="avc1.4d401e,mp4a.40.2",FRAME-RATE=25,AUDIO="a"
v360/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=80000,URI="v360/iframe.m3u8"
"""
MASTER_BR = """#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360
br_360.m3u8
"""
SEGMENTED = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="init.mp4"
#EXT-X-KEY:METHOD=AES-128,URI="../keys/k.key"
#EXTINF:4.0,
seg0.m4s
#EXTINF:3.0,
seg1.m4s
#EXT-X-ENDLIST
"""
IFRAME = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-I-FRAMES-ONLY
#EXTINF:4.0,
#EXT-X-BYTERANGE:100@10
seg0.m4s
#EXT-X-ENDLIST
"""
AUDIO = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na0.aac\n#EXT-X-ENDLIST\n"
SINGLE = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-MAP:URI="br_360.mp4",BYTERANGE="100@0"
#EXTINF:4.0,
#EXT-X-BYTERANGE:400@100
br_360.mp4
#EXTINF:4.0,
#EXT-X-BYTERANGE:500
br_360.mp4
#EXT-X-ENDLIST
"""
FILES: dict[str, str | bytes] = {
    "master.m3u8": MASTER, "master_br.m3u8": MASTER_BR, "v360/index.m3u8": SEGMENTED,
    "v360/iframe.m3u8": IFRAME, "audio/en.m3u8": AUDIO, "br_360.m3u8": SINGLE,
    "v360/init.mp4": b"i" * 50, "v360/seg0.m4s": b"s" * 200, "v360/seg1.m4s": b"s" * 150,
    "keys/k.key": b"k" * 16, "audio/a0.aac": b"a" * 30, "br_360.mp4": b"b" * 1000,
}


def build(root: Path, name: str = "film", changes: dict[str, str | bytes | None] | None = None,
          ) -> Path:
    """A title folder: FILES with `changes` applied (None deletes a file)."""
    title = root / name
    files: dict[str, str | bytes | None] = {**FILES, **(changes or {})}
    add_files(title, {rel: body for rel, body in files.items() if body is not None})
    return title


def test_good_title(tmp_path: Path) -> None:
    info = check_title(build(tmp_path))
    assert info.name == "film" and info.masters == ("master.m3u8", "master_br.m3u8")
    by_path = {r.path: r for r in info.renditions}
    v = by_path["v360/index.m3u8"]
    assert (v.bandwidth, v.average_bandwidth, v.resolution, v.codecs, v.frame_rate) == \
        (800000, 700000, (640, 360), "avc1.4d401e,mp4a.40.2", 25.0)
    assert by_path["v360/iframe.m3u8"].role == "iframe" and by_path["audio/en.m3u8"].role == "audio"
    assert by_path["br_360.m3u8"].master == "master_br.m3u8"
    seg = info.playlist("v360/index.m3u8")
    assert seg is not None and seg.vod and seg.target_duration == 4.0 and seg.duration == 7.0
    assert [s.path for s in seg.segments] == ["v360/seg0.m4s", "v360/seg1.m4s"]
    br = info.playlist("br_360.m3u8")
    assert br is not None and [s.byterange for s in br.segments] == [(100, 400), (500, 500)]
    assert br.vod
    d = json.loads(json.dumps(info.to_dict()))
    assert d["renditions"][0]["resolution"] == [640, 360]
    assert {p["path"] for p in d["playlists"]} == {"v360/index.m3u8", "v360/iframe.m3u8",
                                                   "audio/en.m3u8", "br_360.m3u8"}


BROKEN: list[tuple[str, dict[str, str | bytes | None], str]] = [
    ("missing segment", {"v360/seg1.m4s": None}, "missing file v360/seg1.m4s"),
    ("missing init", {"v360/init.mp4": None}, "missing file v360/init.mp4"),
    ("missing key", {"keys/k.key": None}, "missing file keys/k.key"),
    ("missing audio", {"audio/en.m3u8": None}, "missing file audio/en.m3u8"),
    ("missing iframe", {"v360/iframe.m3u8": None}, "missing file v360/iframe.m3u8"),
    ("range past end", {"br_360.mp4": b"b" * 999}, "500@500 of br_360.mp4 lies outside"),
    ("iframe range", {"v360/seg0.m4s": b"s" * 109}, "100@10 of v360/seg0.m4s"),
    ("map range", {"br_360.m3u8": SINGLE.replace('"100@0"', '"2000@0"')}, "2000@0"),
    ("escape", {"master_br.m3u8": MASTER_BR.replace("br_360", "../other/br_360")}, "outside"),
    ("absolute", {"master_br.m3u8": MASTER_BR.replace("br_360", "http://x/br_360")}, "outside"),
    ("root path", {"master_br.m3u8": MASTER_BR.replace("br_360", "/film/br_360")}, "outside"),
    ("dangling implicit offset",
     {"br_360.m3u8": SINGLE.replace("400@100", "400")}, "without offset"),
    ("no segments", {"audio/en.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:4\n"}, "no segments"),
    ("not a playlist", {"audio/en.m3u8": "hello"}, "EXTM3U"),
]


@pytest.mark.parametrize(("what", "changes", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_titles(tmp_path: Path, what: str, changes: dict[str, str | bytes | None],
                       message: str) -> None:
    with pytest.raises(InvalidMedia) as e:
        check_title(build(tmp_path, changes=changes))
    assert str(e.value).startswith("title 'film': ") and message in str(e.value), what


def test_scan_media_root(tmp_path: Path) -> None:
    build(tmp_path, "good")
    build(tmp_path, "bad", {"v360/seg0.m4s": None})
    (tmp_path / "not-a-title").mkdir()
    (tmp_path / "not-a-title" / "notes.m3u8").write_text("#EXTM3U\n#EXTINF:1,\nx.ts\n")
    (tmp_path / "stray.txt").write_text("x")
    good, broken = scan_media_root(tmp_path)
    assert list(good) == ["good"] and list(broken) == ["bad"]
    assert "missing file v360/seg0.m4s" in broken["bad"]


def test_ffmpeg_packaged_title(tmp_path: Path) -> None:
    """A title as ffmpeg packages it: TS segments, and a single fMP4 file in byte ranges."""
    title = encoded_title(tmp_path, "real", seconds=5, picture="160x90", segment_seconds=1,
                          byteranges="fmp4")
    info = check_title(title)
    for pl in info.playlists:
        assert pl.vod and pl.duration == pytest.approx(5.0, abs=0.1)
        text = (title / pl.path).read_text()
        fast = segments(text, f"/real/{pl.path}")
        assert [s.path for s in fast] == [f"/real/{s.path}" for s in pl.segments]
        assert [s.byterange for s in fast] == [s.byterange for s in parse_media(text).segments]
    br = info.playlist("br/index.m3u8")
    assert br is not None and all(s.byterange for s in br.segments)
    size = (title / "br/all.mp4").stat().st_size
    last = br.segments[-1].byterange
    assert last is not None and last[0] + last[1] == size


def test_bundled_demo_title_is_valid() -> None:
    demo = Path(__file__).resolve().parent.parent / "media" / "demo"
    if not demo.is_dir():
        pytest.skip("media/demo is not built in this checkout")
    info = check_title(demo)
    assert set(info.masters) >= {"master.m3u8", "master_br.m3u8"}
    assert any(r.resolution == (3840, 2160) for r in info.renditions)
    assert all(p.vod for p in info.playlists)
