"""The virtual player's playlist reading (replay/hls.py): pure, no event loop.

Live and event playlists: target duration, media and discontinuity sequence numbers, where a player
joins the window (RFC 8216 §6.3.3), where a sequence number lies as the window slides (§6.3.5), and
byte ranges that keep resolving as it slides (§4.3.2.2).
"""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge360.replay.hls import (
    MIN_RELOAD_S,
    MediaPlaylist,
    PlaylistError,
    Resolver,
    Segment,
    parse_media,
)

BASE = "http://h/live/v0/index.m3u8"


def window(first: int, count: int, *, target: int = 2, ended: bool = False,
           extra: str = "") -> str:
    """A live window of `count` segments named by their media sequence number."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}", *([extra] if extra else [])]
    for n in range(first, first + count):
        lines += [f"#EXTINF:{target}.0,", f"seg_{n}.ts?sid=abcdefgh1"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_live_tags_are_read() -> None:
    pl = parse_media(window(40, 6, target=4, extra="#EXT-X-DISCONTINUITY-SEQUENCE:3"), BASE)
    assert (pl.target_duration, pl.media_sequence, pl.discontinuity_sequence) == (4.0, 40, 3)
    assert pl.live and not pl.ended and pl.last_sequence == 45 and pl.reload_s == 4.0
    seg = pl.segment(42)
    assert seg is not None and seg.url == "http://h/live/v0/seg_42.ts?sid=abcdefgh1"
    assert pl.segment(39) is None and pl.segment(46) is None


def test_defaults_when_the_tags_are_missing_or_malformed() -> None:
    pl = parse_media("#EXTM3U\n#EXT-X-TARGETDURATION:soon\n#EXT-X-MEDIA-SEQUENCE:x\n"
                     "#EXTINF:3.5,\na.ts\n#EXTINF:1,\nb.ts\n", BASE)
    assert (pl.target_duration, pl.media_sequence, pl.discontinuity_sequence) == (0.0, 0, 0)
    assert pl.reload_s == 3.5                  # the longest segment stands in for the target
    tiny = parse_media("#EXTM3U\n#EXTINF:0,\na.ts\n", BASE)
    assert tiny.reload_s == MIN_RELOAD_S       # never a reload loop without a pause


@pytest.mark.parametrize(("text", "live"), [
    (window(0, 3), True),
    (window(0, 3, extra="#EXT-X-PLAYLIST-TYPE:EVENT"), True),
    (window(0, 3, ended=True, extra="#EXT-X-PLAYLIST-TYPE:EVENT"), False),
    (window(0, 3, ended=True), False),
    # a VOD-typed playlist cannot change (§4.3.3.5): nothing to follow even without ENDLIST
    (window(0, 3, extra="#EXT-X-PLAYLIST-TYPE:VOD"), False),
])
def test_which_playlists_are_followed(text: str, live: bool) -> None:
    assert parse_media(text, BASE).live is live


def test_the_window_slides_and_segments_keep_their_numbers() -> None:
    first, later = parse_media(window(10, 6), BASE), parse_media(window(12, 6), BASE)
    # the same media sequence number names the same segment across reloads
    for n in range(12, 16):
        assert first.segment(n) == later.segment(n)
    assert [later.place(n) for n in (11, 12, 17, 18)] == ["behind", "here", "here", "ahead"]
    assert first != later and parse_media(window(12, 6), BASE) == later   # what "changed" means
    ended = parse_media(window(12, 6, ended=True), BASE)
    assert ended != later and ended.place(18) == "over" and ended.place(11) == "behind"


@pytest.mark.parametrize(("durations", "target", "edge"), [
    ([2.0] * 6, 2, 3),                   # full-length segments: the third-last
    ([2.0] * 3, 2, 0),                   # exactly three target durations: the first
    ([2.0] * 2, 2, 0),                   # shorter than three: the first
    ([1.9] * 6, 2, 2),                   # short segments: the last one starting >= 6 s from the end
    ([2.0, 2.0, 2.0, 2.0, 0.5], 2, 1),   # a short last segment counts for its length
])
def test_join_three_target_durations_from_the_end(durations: list[float], target: int,
                                                  edge: int) -> None:
    lines = ["#EXTM3U", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:100"]
    for i, d in enumerate(durations):
        lines += [f"#EXTINF:{d},", f"s{i}.ts"]
    assert parse_media("\n".join(lines) + "\n", BASE).live_edge() == 100 + edge


@given(st.lists(st.floats(0.1, 6.0), min_size=1, max_size=40), st.integers(1, 6),
       st.integers(0, 10**6))
def test_the_live_edge_is_the_latest_segment_three_targets_out(
        durations: list[float], target: int, first: int) -> None:
    pl = MediaPlaylist(segments=tuple(Segment(d, f"s{i}", None) for i, d in enumerate(durations)),
                       ended=False, target_duration=target, media_sequence=first)
    edge = pl.live_edge()
    assert pl.place(edge) == "here"
    starts, end = pl.starts, sum(durations)
    i = edge - first
    # it starts at least three target durations from the end (or is the first segment) ...
    assert i == 0 or end - starts[i] >= 3 * target - 1e-6
    # ... and the next one would not
    assert i + 1 == len(durations) or end - starts[i + 1] < 3 * target + 1e-6


def test_live_byte_ranges_resolve_as_the_window_slides() -> None:
    def ranged(first: int) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:4", "#EXT-X-TARGETDURATION:2",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, first + 4):
            # the first range of the window carries its offset, the rest follow on (§4.3.2.2)
            at = f"@{n * 1000}" if n == first else ""
            lines += ["#EXTINF:2.0,", f"#EXT-X-BYTERANGE:1000{at}", "all.ts"]
        return "\n".join(lines) + "\n"
    for first in (0, 1, 7):
        pl = parse_media(ranged(first), BASE)
        assert [s.byterange for s in pl.segments] == [
            (n * 1000, n * 1000 + 999) for n in range(first, first + 4)]
    # two resources interleaved: each offset-less range follows its own URI's last range
    text = ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2,\n#EXT-X-BYTERANGE:10@100\na.ts\n"
            "#EXTINF:2,\n#EXT-X-BYTERANGE:20@0\nb.ts\n#EXTINF:2,\n#EXT-X-BYTERANGE:10\na.ts\n")
    assert [s.byterange for s in parse_media(text, BASE).segments] == [
        (100, 109), (0, 19), (110, 119)]


def test_a_live_window_may_not_open_with_an_offsetless_range() -> None:
    text = ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:9\n"
            "#EXTINF:2,\n#EXT-X-BYTERANGE:1000\nall.ts\n")
    # mid-file in a sliding window: guessing offset 0 would fetch the wrong bytes
    with pytest.raises(PlaylistError, match="without an offset"):
        parse_media(text, BASE)
    # a VOD file starts at 0, as the player always read it
    vod = parse_media(text + "#EXT-X-ENDLIST\n", BASE)
    assert vod.segments[0].byterange == (0, 999)


_URI_CHARS = st.sampled_from([*"ab0./:?#=&%;@+~-_ ", "..", "//", "http:", "x:y", "%2F"])
_BASES = st.sampled_from([
    "http://h/live/v0/index.m3u8", "http://h:8080/a/b/index.m3u8?sid=abc&x=1",
    "https://user:pw@h/a/./b/../c/x.m3u8#frag", "http://h", "http://h/", "http://h/a/b/",
    "http://[::1]:8080/t/r0/index.m3u8?sid=abcdefghij", "http://h/a/b/..", "http://h/a;p/b?q",
])


@settings(max_examples=2000)
@given(_BASES, st.lists(_URI_CHARS, min_size=1, max_size=8).map("".join))
def test_a_playlist_uri_resolves_exactly_as_urljoin_resolves_it(base: str, ref: str) -> None:
    """The resolver's shortcut for plain names gives urljoin's answer for any reference."""
    assert Resolver(base)(ref) == urljoin(base, ref)


def test_segment_uris_resolve_against_the_playlist_url_with_its_query() -> None:
    text = "#EXTM3U\n#EXTINF:6,\n0.ts?sid=abcdefghij\n#EXTINF:6,\n../v1/1.ts\n" \
           "#EXTINF:6,\n/abs/2.ts\n#EXTINF:6,\nhttp://o/3.ts\n#EXT-X-ENDLIST\n"
    urls = [s.url for s in parse_media(text, "http://h/t/v0/index.m3u8?sid=abcdefghij").segments]
    assert urls == ["http://h/t/v0/0.ts?sid=abcdefghij", "http://h/t/v1/1.ts", "http://h/abs/2.ts",
                    "http://o/3.ts"]
