"""The replayer's pure rules, by tables: buffering profiles, the play-out buffer, CMCD encoding,
the ground-truth counting rules and the machine-limit planning. No event loop, no network."""

from __future__ import annotations

import itertools
import math
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import UsageError
from edge360.replay import cmcd, limits, truth
from edge360.replay.buffer import PlayBuffer
from edge360.replay.model import Viewer
from edge360.replay.player import expected_bitrate
from edge360.replay.profiles import AVPLAYER, EXOPLAYER, HLSJS, PROFILES, PlayerProfile


@pytest.mark.parametrize(("profile", "bitrate", "goal"), [
    # hls.js: min(max(8 x 60 MB / bitrate, 30), 600)
    (HLSJS, 16e6, 30.0), (HLSJS, 32e6, 30.0), (HLSJS, 8e6, 60.0), (HLSJS, 1e6, 480.0),
    (HLSJS, 400e3, 600.0), (HLSJS, 0, 30.0),
    # ExoPlayer: 50 s, lowered by its byte target at a high bitrate
    (EXOPLAYER, 6e6, 50.0), (EXOPLAYER, 40e6, 8 * 2200 * 65536 / 40e6),
    (AVPLAYER, 1e6, 60.0), (AVPLAYER, 40e6, 60.0),
])
def test_profile_goals(profile: PlayerProfile, bitrate: float, goal: float) -> None:
    assert profile.goal_for(bitrate) == pytest.approx(goal)


def test_every_profile_names_its_source() -> None:
    assert set(PROFILES) == {"hlsjs", "avplayer", "exoplayer"}
    assert "maxBufferLength" in HLSJS.source and "DefaultLoadControl" in EXOPLAYER.source
    assert "preferredForwardBufferDuration" in AVPLAYER.source


def _fetch_pattern(profile: PlayerProfile, speed: float, seconds: float, d: float = 1.0,
                   bitrate: float = 16e6) -> tuple[list[float], PlayBuffer]:
    """A player whose every fetch lands at once: the real times of its fetches over `seconds`."""
    buf = PlayBuffer(profile, speed, 0.0)
    goal = profile.goal_for(bitrate)
    now, times = 0.0, []
    while True:
        now = buf.due(now, goal)
        if now > seconds:
            return times, buf
        times.append(now)
        buf.landed(now, d)


def test_fills_to_the_goal_at_once_then_one_segment_per_duration() -> None:
    times, buf = _fetch_pattern(HLSJS, speed=10.0, seconds=20.0)
    burst = [t for t in times if t == 0.0]
    # the 30 s goal of 1 s segments, and the next that the moving play head makes due at once
    assert len(burst) == 31
    steady = [b - a for a, b in itertools.pairwise(times[31:])]
    assert steady and all(g == pytest.approx(0.1) for g in steady)   # 1 s / speed 10
    # 20 real s at speed 10 played 200 s: fetched the goal ahead of that
    assert len(times) == pytest.approx(31 + 200, abs=1)
    assert buf.first_frame == 0.0 and buf.stall_s == 0.0


def test_a_low_bitrate_fills_hls_js_far_beyond_30_seconds() -> None:
    times, _ = _fetch_pattern(HLSJS, speed=1.0, seconds=0.5, d=6.0, bitrate=1e6)
    assert len(times) == 81                               # 480 s of 6 s segments, and one


def test_start_and_rebuffer_thresholds() -> None:
    buf = PlayBuffer(EXOPLAYER, 1.0, 0.0)
    buf.landed(0.5, 2.0)
    assert buf.first_frame is None and buf.starting        # 2 s < ExoPlayer's 2.5 s
    buf.landed(1.0, 2.0)
    assert buf.first_frame == 1.0 and not buf.starting
    buf.advance(10.0)                                      # ran dry at 5.0: a stall
    assert buf.starting and buf.take_starved() and not buf.take_starved()
    buf.landed(11.0, 2.0)
    assert buf.starting                                    # 2 s < 5 s to resume after a stall
    buf.landed(12.0, 4.0)
    assert not buf.starting and buf.stall_s == pytest.approx(7.0)   # dry from 5.0 to 12.0
    assert buf.played_s == pytest.approx(4.0)


def test_stalls_are_media_seconds_and_the_end_is_no_stall() -> None:
    buf = PlayBuffer(HLSJS, 4.0, 0.0)
    buf.landed(0.0, 1.0)                                   # plays until 0.25
    buf.landed(0.5, 1.0)                                   # 0.25 real s late: 1 media s
    assert buf.stall_s == pytest.approx(1.0)
    buf.end(0.5)
    assert buf.played_out_at(0.5) == pytest.approx(0.75)
    buf.finish(5.0)
    assert buf.stall_s == pytest.approx(1.0) and buf.played_s == pytest.approx(2.0)


def test_a_viewer_already_watching_plays_its_inherited_buffer() -> None:
    buf = PlayBuffer(HLSJS, 2.0, 3.0, inherited_s=30.0)
    assert buf.first_frame == 3.0 and not buf.starting
    assert buf.due(3.0, 30.0) == 3.0                       # eats into the goal at once
    buf.finish(4.0)
    assert buf.played_s == pytest.approx(2.0) and buf.ahead == pytest.approx(28.0)


def _query(url: str) -> str:
    return parse_qs(urlsplit(url).query)["CMCD"][0]


def test_cmcd_keys_values_and_their_order() -> None:
    data = cmcd.Data(ot="av", sid='a"b', pr=60, st="v", br_kbps=800.4, tb_kbps=1600,
                     d_s=6.0005, bl_s=2.25, su=True, bs=True)
    assert cmcd.payload(data) == ('bl=2300,br=800,bs,d=6001,ot=av,pr=60,sf=h,'
                                  'sid="a\\"b",st=v,su,tb=1600')
    url = cmcd.with_query("http://h/t/seg.ts?sid=abcdefgh", data)
    assert url.startswith("http://h/t/seg.ts?sid=abcdefgh&CMCD=bl%3D2300%2C")
    assert _query(url) == cmcd.payload(data)
    assert cmcd.headers(data) == {
        "CMCD-Object": "br=800,d=6001,ot=av,tb=1600", "CMCD-Request": "bl=2300,su",
        "CMCD-Session": 'pr=60,sf=h,sid="a\\"b",st=v', "CMCD-Status": "bs"}
    # false booleans and a playback rate of 1 are left out; a playlist is object type m
    plain = cmcd.payload(cmcd.Data(ot="m", sid="s1234567"))
    assert plain == 'ot=m,sf=h,sid="s1234567"'
    assert [cmcd.object_type(u) for u in ("a/b.m3u8?x=1", "s.ts", "s.m4s", "a.aac", "k.key",
                                          "x.bin")] == ["m", "av", "v", "a", "k", "o"]


@given(st.floats(min_value=0, max_value=1e5, allow_nan=False))
def test_buffer_length_is_whole_hundreds_of_milliseconds_nearest(bl: float) -> None:
    value = int(dict(cmcd.pairs(cmcd.Data(ot="v", sid="s", bl_s=bl)))["bl"] or -1)
    assert value % 100 == 0 and abs(value - bl * 1000) <= 50 + 1e-6 * bl * 1000


def _record(first: float | None, last: float, fetched: float, quit_at: float,
            watch: float | None) -> truth.Record:
    return truth.Record(first, last, fetched, quit_at, watch)


def test_the_counting_rules() -> None:
    playout, requests = truth.Rule(2.0, 10.0), truth.Rule(2.0, None)
    assert (playout.name, requests.name) == ("play-out", "requests")
    # fetched 300 media s from t=1: played out at 1 + 300/10 = 31, later than its last request
    r = _record(1.0, 20.0, 300.0, 21.0, 1.2)
    assert playout.interval(r) == (1.0, 33.0)
    assert requests.interval(r) == (1.0, 22.0)
    # a last request after the play-out: it counts until then
    assert playout.interval(_record(1.0, 40.0, 10.0, 41.0, 1.1)) == (1.0, 42.0)
    # playlists only: never counted; no first frame: never watching
    assert playout.interval(_record(None, 3.0, 0.0, 4.0, None)) is None
    assert truth.watching([_record(1.0, 2.0, 6.0, 3.0, None), r]) == [(1.2, 21.0)]


def test_a_viewer_counted_twice_by_the_rule_is_two_intervals_and_one_viewer_with_media() -> None:
    rule = truth.Rule(2.0, None)
    again = truth.Record(50.0, 60.0, 6.0, 61.0, 1.2, earlier=((1.0, 22.0),))
    closed = truth.Record(None, 40.0, 0.0, 41.0, 1.2, earlier=((1.0, 12.0), (30.0, 35.0)))
    never = _record(None, 3.0, 0.0, 4.0, None)
    assert truth.counted([again, closed, never], rule) == [
        (1.0, 22.0), (50.0, 62.0), (1.0, 12.0), (30.0, 35.0)]
    assert truth.with_media([again, closed, never]) == 2
    assert rule.end(50.0, 60.0, 6.0) == 62.0


def test_counts_and_the_exact_peak() -> None:
    spans = [(0.0, 10.0), (2.0, 5.0), (4.0, 6.0), (5.0, 7.0)]
    assert truth.counts(spans, [0.0, 3.0, 4.5, 5.0, 9.99, 10.0]) == [1, 2, 3, 3, 1, 0]
    assert truth.peak(spans) == 3 and truth.peak([]) == 0


def test_peak_concurrency_and_connections_needed() -> None:
    viewers = [Viewer(0, 0.0, 10.0, 0.0), Viewer(1, 5.0, 10.0, 0.0), Viewer(2, 9.0, 1.0, 0.0),
               Viewer(3, 10.0, 5.0, 0.0), Viewer(4, 30.0, 1.0, 0.0)]
    assert limits.peak_concurrent(viewers) == 4
    assert limits.peak_concurrent([]) == 0
    assert limits.connections_needed(1000, None) == 1100
    assert limits.connections_needed(1000, 64) == math.ceil(64 * limits.MARGIN)


def test_source_addresses() -> None:
    assert limits.parse_sources("3", "127.0.0.1") == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert limits.parse_sources("127.0.0.2, 127.0.0.3,127.0.0.2", "h") == ("127.0.0.2",
                                                                           "127.0.0.3")
    assert limits.parse_sources(None, "h") == ()
    for text, host, needle in (("0", "127.0.0.1", "1 to 254"), ("2", "example.com", "loopback"),
                               ("127.0.0.x", "127.0.0.1", "not an IP address")):
        with pytest.raises(UsageError, match=needle):
            limits.parse_sources(text, host)
    with pytest.raises(UsageError, match=r"cannot send from 192\.0\.2\.1"):
        limits.check_bindable(("127.0.0.2", "192.0.2.1"))


def test_ports_per_address_pair_bound_the_plan() -> None:
    ports = limits.cheap_ports_per_pair()
    assert ports == limits.ports_per_pair() // 2   # connect()'s half of the range
    fits = int(limits.PORT_SHARE * ports / limits.MARGIN)
    assert limits.check_ports(fits, None, 1, 0, loopback=True) == ports
    with pytest.raises(UsageError, match=r"--source-addresses 2 \(127.0.0.1-127.0.0.2\)"):
        limits.check_ports(fits + 100, None, 1, 0, loopback=True)
    assert limits.check_ports(fits + 100, None, 1, 2, loopback=True) == ports
    assert limits.check_ports(10 * fits, 64, 4, 0, loopback=False) == ports   # a shared pool


def test_expected_bitrate_follows_the_link_mix() -> None:
    ladder = [400_000, 1_200_000, 3_000_000]
    links = ((0.5, 10e6), (0.5, 1e6))
    assert expected_bitrate(ladder, links) == pytest.approx(0.5 * 3e6 + 0.5 * 400e3)
    assert expected_bitrate([], links) == 0.0
