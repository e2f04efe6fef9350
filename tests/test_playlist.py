"""Tests of edge360.playlist (classification, segments, escapes) and of the per-viewer rewrite
built on its scan (edge360.playlistrewrite)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import BadRequest, InvalidMedia
from edge360.hls.playlist import (
    Segment,
    byterange_boundaries,
    escapes_title,
    is_vod,
    kind,
    next_segments,
    parse_master,
    parse_media,
    segments,
    target_duration,
    uris,
)
from edge360.hls.rewrite import CompiledPlaylist

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-SESSION-KEY:METHOD=AES-128,URI="keys/session.key"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",URI="info.json"
#EXT-X-SESSION-DATA:DATA-ID="com.example.lang",VALUE="en"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",URI="audio/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AVERAGE-BANDWIDTH=1000000,RESOLUTION=640x360,\
CODECS="avc1.4d401e,mp4a.40.2",FRAME-RATE=25.000,AUDIO="aud"
v360/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=20000000,RESOLUTION=3840x2160,CODECS="hvc1.2.4.L153.B0",AUDIO="aud"
v2160/index.m3u8?v=2#frag
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="v360/iframe.m3u8",CODECS="avc1.4d401e"
"""

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="br.mp4",BYTERANGE="700@0"
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://key-id",KEYFORMAT="com.apple.streamingkeydelivery"
#EXT-X-KEY:METHOD=AES-128,URI="../keys/k1.key?kid=1&sid=someoneelse",IV=0x00000000000000000000000000000001
#EXTINF:4.0,
#EXT-X-BYTERANGE:1000@700
br.mp4
#EXTINF:4.0,
#EXT-X-BYTERANGE:1200
br.mp4
#EXTINF:3.5,first of the others
#EXT-X-BYTERANGE:800
br.mp4
#EXT-X-ENDLIST
"""


@pytest.mark.parametrize(("text", "expected"), [
    (MASTER, "master"), (MEDIA, "media"),
    ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\na.ts\n", "media"),
    ("#EXTM3U\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"i.m3u8\"\n", "master"),
    ("#EXTM3U\n", "media"),
])
def test_kind(text: str, expected: str) -> None:
    assert kind(text) == expected


@pytest.mark.parametrize(("text", "vod", "td"), [
    (MEDIA, True, 4.0),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n", False, 6.0),
    ("#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n#EXTINF:2,\r\na.ts\r\n#EXT-X-ENDLIST\r\n", True, 2.0),
    ("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2,\na.ts\n", True, None),
    ("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:x\n", False, None),
])
def test_is_vod_and_target_duration(text: str, vod: bool, td: float | None) -> None:
    assert is_vod(text) is vod and target_duration(text) == td


# ---------------------------------------------------------------- rewrite

P = "sid=abc12345&token=t.0-x"


def test_render_master_table() -> None:
    out = CompiledPlaylist.compile(MASTER).render(P).decode()
    assert f'URI="keys/session.key?{P}"' in out
    assert f'URI="info.json?{P}"' in out
    assert 'VALUE="en"' in out
    assert f'NAME="English, main",URI="audio/en.m3u8?{P}"' in out
    assert f"\nv360/index.m3u8?{P}\n" in out
    assert f"\nv2160/index.m3u8?v=2&{P}#frag\n" in out  # the fragment stays last
    assert f'URI="v360/iframe.m3u8?{P}"' in out
    assert 'CODECS="avc1.4d401e,mp4a.40.2"' in out  # attributes other than URI untouched
    assert out.count(P) == 6


def test_render_media_table_strips_foreign_viewer_params() -> None:
    c = CompiledPlaylist.compile(MEDIA)
    out = c.render(P).decode()
    assert f'URI="br.mp4?{P}",BYTERANGE="700@0"' in out
    assert 'URI="skd://key-id"' in out  # absolute (scheme) URIs are never given a viewer's sid
    assert f'URI="../keys/k1.key?kid=1&{P}",IV=' in out
    assert "someoneelse" not in out and "someoneelse" not in c.render("").decode()
    assert out.count(f"\nbr.mp4?{P}\n") == 3
    assert c.slots == 5


@pytest.mark.parametrize(("uri", "expected"), [
    ("a.ts", f"a.ts?{P}"),
    ("a.ts?x=1", f"a.ts?x=1&{P}"),
    ("a.ts?sid=other123&x=1&token=zz&CMCD=sid%3D%22q%22", f"a.ts?x=1&{P}"),
    ("a.ts?sid=other123", f"a.ts?{P}"),
    ("a.ts#t=10", f"a.ts?{P}#t=10"),
    ("a.ts?x=1#t", f"a.ts?x=1&{P}#t"),
    ("/abs/path.ts", f"/abs/path.ts?{P}"),
    ("http://cdn.example/a.ts", "http://cdn.example/a.ts"),
    ("//cdn.example/a.ts", "//cdn.example/a.ts"),
    ("data:text/plain;base64,AAAA", "data:text/plain;base64,AAAA"),
])
def test_render_uri_forms(uri: str, expected: str) -> None:
    text = f"#EXTM3U\n#EXTINF:2,\n{uri}\n"
    assert CompiledPlaylist.compile(text).render(P).decode() == f"#EXTM3U\n#EXTINF:2,\n{expected}\n"


def test_render_empty_params_is_the_original() -> None:
    for text in (MASTER, "#EXTM3U\r\n#EXTINF:2,\r\na.ts\r\n", "#EXTM3U\n#EXTINF:2,\na.ts"):
        c = CompiledPlaylist.compile(text)
        assert c.render("") == text.encode()


def test_render_keeps_crlf_and_missing_final_newline() -> None:
    c = CompiledPlaylist.compile("#EXTM3U\r\n#EXTINF:2,\r\na.ts\r\n#EXTINF:2,\r\nb.ts")
    assert c.render("sid=abcdefgh") == b"#EXTM3U\r\n#EXTINF:2,\r\na.ts?sid=abcdefgh\r\n" \
        b"#EXTINF:2,\r\nb.ts?sid=abcdefgh"


@pytest.mark.parametrize("bad", ['sid=a"b', "sid=a b", "sid=a\nb", "sid=a#b", "sid=\x00"])
def test_render_refuses_params_that_would_break_the_playlist(bad: str) -> None:
    with pytest.raises(BadRequest):
        CompiledPlaylist.compile(MEDIA).render(bad)


_seg = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8)
_query = st.lists(st.tuples(st.sampled_from(["v", "x", "lang"]), _seg), max_size=2).map(
    lambda kv: "?" + "&".join(f"{k}={v}" for k, v in kv) if kv else "")
_frag = st.one_of(st.just(""), _seg.map(lambda s: "#" + s))
_uri = st.builds(lambda d, q, f: d + q + f,
                 st.lists(_seg, min_size=1, max_size=3).map("/".join), _query, _frag)
_tag = st.sampled_from(["#EXT-X-MAP", "#EXT-X-KEY", "#EXT-X-MEDIA", "#EXT-X-PART",
                        "#EXT-X-PRELOAD-HINT", "#EXT-X-RENDITION-REPORT",
                        "#EXT-X-I-FRAME-STREAM-INF", "#EXT-X-SESSION-KEY"])
_line = st.one_of(
    _uri,
    st.builds(lambda t, u: f'{t}:NAME="a,URI=b",URI="{u}",X=1', _tag, _uri),
    st.builds(lambda u: f'#EXT-X-SESSION-DATA:DATA-ID="d",URI="{u}"', _uri),
    st.sampled_from(["#EXTINF:4.0,", "#EXT-X-TARGETDURATION:4", "", "# a comment", "#EXTM3U",
                     "#EXT-X-BYTERANGE:100@0", '#EXT-X-MAP:URI="http://x/init.mp4"']),
)


@given(st.lists(_line, max_size=40), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_render_then_strip_gives_back_the_original(lines: list[str], eol: str,
                                                   final: bool) -> None:
    text = eol.join(lines) + (eol if final else "")
    c = CompiledPlaylist.compile(text)
    params = "sid=ZZZZZZZZ&token=QQ"  # no generated URI contains Z or Q
    out = c.render(params).decode()
    assert out.count("\n") == text.count("\n")
    assert out.count(params) == c.slots == sum(1 for u in uris(text) if "://" not in u)
    assert out.replace("?" + params, "").replace("&" + params, "") == text
    assert c.render("") == text.encode()


# ---------------------------------------------------------------- segments

def test_segments_resolve_paths_and_implicit_offsets() -> None:
    segs = segments(MEDIA, "/demo/v1/index.m3u8")
    init = ("/demo/v1/br.mp4", (0, 700))
    assert segs == [
        Segment("/demo/v1/br.mp4", 4.0, (700, 1000), *init),
        Segment("/demo/v1/br.mp4", 4.0, (1700, 1200), *init),
        Segment("/demo/v1/br.mp4", 3.5, (2900, 800), *init),
    ]
    assert byterange_boundaries(segs) == {"/demo/v1/br.mp4": [0, 700, 1700, 2900]}
    assert [s.byterange for s in next_segments(segs, "/demo/v1/br.mp4", (700, 1000), 1)] == \
        [(1700, 1200)]
    assert next_segments(segs, "/demo/v1/br.mp4", (1700, 500), 5) == segs[2:]  # offset match
    assert next_segments(segs, "/demo/v1/br.mp4", (2900, 800), 2) == []
    assert next_segments(segs, "/demo/v1/other.mp4", None, 2) == []


def test_segments_plain_files_and_relative_forms() -> None:
    text = ("#EXTM3U\n#EXTINF:2,\nseg0.ts?x=1\n#EXTINF:2.5,\n../v2/seg1.ts\n#EXTINF:2,\n"
            "http://other/seg2.ts\n#EXTINF:2,\n/demo/abs/seg3.ts#f\n")
    segs = segments(text, "/demo/v1/index.m3u8")
    assert [(s.path, s.duration, s.byterange) for s in segs] == [
        ("/demo/v1/seg0.ts", 2.0, None), ("/demo/v2/seg1.ts", 2.5, None),
        ("/demo/abs/seg3.ts", 2.0, None)]
    assert byterange_boundaries(segs) == {}
    assert next_segments(segs, "/demo/v1/seg0.ts", None, 1) == [segs[1]]


@pytest.mark.parametrize("text", [
    "#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:100\na.mp4\n",  # no previous sub-range
    "#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:100@0\na.mp4\n#EXTINF:2,\n#EXT-X-BYTERANGE:10\nb.mp4\n",
    "#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:abc\na.mp4\n",
    "#EXTM3U\n#EXTINF:x,\na.ts\n",
])
def test_segments_refuse_bad_byte_ranges(text: str) -> None:
    with pytest.raises(InvalidMedia):
        segments(text, "/t/p.m3u8")
    with pytest.raises(InvalidMedia):
        parse_media(text)


_ranges = st.lists(st.tuples(st.sampled_from(["a.mp4", "b.mp4", "c.ts"]),
                             st.integers(1, 10_000), st.booleans(),
                             st.floats(0.5, 10, allow_nan=False).map(lambda f: round(f, 3))),
                   min_size=1, max_size=30)


@given(_ranges)
def test_segments_agree_with_m3u8(entries: list[tuple[str, int, bool, float]]) -> None:
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:10", '#EXT-X-MAP:URI="a.mp4",BYTERANGE="50@0"']
    offset: dict[str, int] = {}
    prev = None
    for name, length, explicit, dur in entries:
        lines.append(f"#EXTINF:{dur},")
        if explicit or prev != name:
            lines.append(f"#EXT-X-BYTERANGE:{length}@{offset.get(name, 0)}")
        else:
            lines.append(f"#EXT-X-BYTERANGE:{length}")
        lines.append(name)
        offset[name] = offset.get(name, 0) + length
        prev = name
    text = "\n".join([*lines, "#EXT-X-ENDLIST", ""])
    fast = segments(text, "/t/index.m3u8")
    slow = parse_media(text)
    assert [(s.duration, s.byterange) for s in fast] == \
        [(s.duration, s.byterange) for s in slow.segments]
    assert [s.path for s in fast] == ["/t/" + s.path for s in slow.segments]
    assert slow.vod and slow.target_duration == 10.0
    ends = {s.path: s.byterange[0] + s.byterange[1] for s in fast if s.byterange}
    assert all(ends[f"/t/{n}"] == offset[n] for n in offset)


# ---------------------------------------------------------------- escapes and m3u8 parsing

@pytest.mark.parametrize(("uri", "escapes"), [
    ("seg.ts", False), ("../v2/seg.ts", False), ("/demo/v1/seg.ts", False),
    ("../../other/seg.ts", True), ("/other/seg.ts", True), ("http://evil/seg.ts", True),
    ("//evil/seg.ts", True), ("..%2f..%2fother/seg.ts", True), ("%2e%2e/%2e%2e/x.ts", True),
    ("..\\..\\x.ts", True), ("../../demo/v1/seg.ts", False), ("../../demox/seg.ts", True),
])
def test_escapes_title(uri: str, escapes: bool) -> None:
    text = f"#EXTM3U\n#EXTINF:2,\n{uri}\n"
    assert escapes_title(text, "/demo/v1/index.m3u8", "demo") is escapes
    tag = f'#EXTM3U\n#EXT-X-MAP:URI="{uri}"\n#EXTINF:2,\nok.ts\n'
    assert escapes_title(tag, "/demo/v1/index.m3u8", "demo") is escapes


def test_parse_master() -> None:
    m = parse_master(MASTER)
    v = {x.uri: x for x in m.variants}
    assert v["v360/index.m3u8"].resolution == (640, 360)
    assert v["v360/index.m3u8"].average_bandwidth == 1_000_000
    assert v["v360/index.m3u8"].frame_rate == 25.0
    assert v["v2160/index.m3u8?v=2#frag"].bandwidth == 20_000_000
    assert v["v360/iframe.m3u8"].role == "iframe"
    assert v["audio/en.m3u8"].role == "audio" and v["audio/en.m3u8"].name == "English, main"
    assert set(m.other_uris) == {"keys/session.key", "info.json"}
    with pytest.raises(InvalidMedia):
        parse_master("not a playlist")
    with pytest.raises(InvalidMedia):
        parse_media(MASTER)
