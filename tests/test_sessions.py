"""Tests of edge360.sessions: identity precedence, CMCD sid parsing, and the session table
(starting and active sessions, the play-out rule, CMCD, watch seconds, peaks, bounds, the state
file) against tables and against an obvious O(n) model."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge360.sessions.cmcd import Playback
from edge360.sessions.identity import cmcd_sid, fallback_key, identity, new_sid, valid_sid
from edge360.sessions.playout import AUDIO, MAIN, NO_MEDIA, TEXT, advance, rate_of, track_for
from edge360.sessions.tracker import NO_RENDITION, OTHER, SessionTracker

UUID = "6e2fb550-c457-11e9-bb97-0800200c9a66"


# ---------------------------------------------------------------- identity

@pytest.mark.parametrize(("sid", "ok"), [
    ("abcdefgh", True), ("a" * 64, True), ("A-b_9" * 3, True), (UUID, True),
    ("abcdefg", False), ("a" * 65, False), ("abcdefgh!", False), ("abc defgh", False),
    ("", False), (None, False), ("abcdefgh\n", False), ("ábcdefgh", False),
])
def test_valid_sid(sid: str | None, ok: bool) -> None:
    assert valid_sid(sid) is ok


def test_new_sid_is_valid_and_distinct() -> None:
    sids = {new_sid() for _ in range(1000)}
    assert len(sids) == 1000
    assert all(len(s) == 22 and valid_sid(s) for s in sids)


@pytest.mark.parametrize(("value", "sid"), [
    (f'sid="{UUID}"', UUID),
    (f'br=3200,bs,cid="film",sid="{UUID}",su', UUID),
    (f'cid="a,sid=\\"zzzzzzzzzz\\"",sid="{UUID}"', UUID),  # a sid inside another string is not it
    ('cid="a,sid=\\"zzzzzzzzzz\\""', None),
    (f"sid={UUID}", None),  # a String must be quoted (CTA-5004)
    ('sid="short"', None),
    ('sid="has space in it"', None),
    ('sid="a\\"bcdefghij"', None),
    ("", None), (None, None), ("garbage", None), ("=,=,", None),
    (f' br = 3200 , sid = "{UUID}" ', UUID),
])
def test_cmcd_sid(value: str | None, sid: str | None) -> None:
    assert cmcd_sid(value) == sid


GOOD_Q, GOOD_C, GOOD_H = "querysid1", "cmcdquery1", "cmcdheader1"
FB = fallback_key("10.0.0.1", "UA")


@pytest.mark.parametrize(("query", "cmcd_q", "cmcd_h", "expected"), [
    (GOOD_Q, f'sid="{GOOD_C}"', f'sid="{GOOD_H}"', (GOOD_Q, True)),
    (None, f'sid="{GOOD_C}"', f'sid="{GOOD_H}"', (GOOD_C, True)),
    ("bad!", f'sid="{GOOD_C}"', f'sid="{GOOD_H}"', (GOOD_C, True)),
    (None, None, f'sid="{GOOD_H}"', (GOOD_H, True)),
    ("short", "br=1", f'sid="{GOOD_H}"', (GOOD_H, True)),
    (None, 'sid="x"', f'sid="{GOOD_H}"', (GOOD_H, True)),
    (None, None, None, (FB, False)),
    ("", "", "", (FB, False)),
    ("a" * 65, 'sid="bad sid here"', "sid=unquoted1", (FB, False)),
])
def test_identity_precedence(query: str | None, cmcd_q: str | None, cmcd_h: str | None,
                             expected: tuple[str, bool]) -> None:
    assert identity(query, cmcd_q, cmcd_h, "10.0.0.1", "UA") == expected


@given(st.text(max_size=60), st.text(max_size=600))
def test_fallback_key_is_short_and_never_a_sid(address: str, ua: str) -> None:
    key = fallback_key(address, ua)
    assert len(key) == 17 and not valid_sid(key) and key == fallback_key(address, ua)


def test_fallback_key_separates_clients() -> None:
    keys = {fallback_key(f"10.0.0.{i}", ua) for i in range(50) for ua in ("A", "B", "x" * 500)}
    assert len(keys) == 150


# ---------------------------------------------------------------- tracker tables

def pl(t: SessionTracker, key: str, now: float, title: str = "film", nbytes: int = 0) -> bool:
    """A playlist request (no media)."""
    return t.touch(key, now, title=title, rendition=None, nbytes=nbytes)


def seg(t: SessionTracker, key: str, now: float, media: float = 6.0, *, title: str = "film",
        rendition: str = "720p", track: int = MAIN, cmcd: Playback | None = None,
        nbytes: int = 0) -> bool:
    """A media segment of `media` seconds."""
    return t.touch(key, now, title=title, rendition=rendition, media=media, track=track,
                   cmcd=cmcd, nbytes=nbytes)


def test_playlists_alone_start_a_session_that_is_never_a_view() -> None:
    t = SessionTracker(30, 15, 100)
    for i in range(10):  # ten probes of the master playlist, each with a fresh sid
        assert not pl(t, f"probe-{i:04}", float(i))
    assert (t.starting, t.active, t.views, t.peak) == (10, 0, 0, 0)
    assert not any(t.active_by_label().values()) and t.views_by_title == {}
    assert not pl(t, "probe-0009", 20.0)  # asked again: still starting
    assert t.expire(29.999) == 0 and t.starting == 10
    t.expire(39.0)  # ended idle_timeout after their last request; never counted
    assert (t.starting, t.active, t.views) == (1, 0, 0)
    t.expire(50.0)
    assert t.starting == 0 and t.watch_seconds_by_title == {}


def test_the_first_segment_starts_playback_and_counts_one_view() -> None:
    t = SessionTracker(30, 15, 100)
    assert not pl(t, "viewer-aa", 0.0)
    assert not pl(t, "viewer-aa", 0.5)
    assert seg(t, "viewer-aa", 1.0, 0.0, rendition="init")  # an init section starts it too
    assert (t.starting, t.active, t.views, t.peak, t.peak_time) == (0, 1, 1, 1, 1.0)
    assert not seg(t, "viewer-aa", 1.1)  # later segments count no further view
    assert t.views_by_title == {"film": 1} and t.active_by_label()[("film", "720p")] == 1
    assert seg(t, "viewer-zz", 2.0)  # a first request that is a segment is a view at once
    assert t.views == 2 and t.active == 2


def test_a_player_that_buffers_ahead_stays_active_until_its_media_has_played() -> None:
    """The reported case: hls.js fetched all 20 segments of a 120 s title within 1 s."""
    t = SessionTracker(30, 15, 100)
    pl(t, "viewer-aa", 0.0)
    for i in range(20):
        seg(t, "viewer-aa", 0.05 * (i + 1))
    t.expire(31.0)  # before: ended here, 30 s after the last request
    assert t.active == 1
    t.expire(0.05 + 120 + 30 - 1e-6)
    assert t.active == 1
    assert t.expire(0.05 + 120 + 30) == 1  # first segment + 120 s of media + idle timeout
    assert t.active == 0 and t.peak == 1
    assert t.watch_seconds_by_title["film"] == pytest.approx(120.0)


def test_time_scale_divides_media_seconds() -> None:
    t = SessionTracker(3, 15, 100, time_scale=10)
    for i in range(20):
        seg(t, "viewer-aa", 0.01 * i)  # 120 s of media, played at 10x: 12 s
    assert t.expire(12.0 + 3 - 1e-6) == 0
    assert t.expire(12.0 + 3) == 1
    assert t.watch_seconds_by_title["film"] == pytest.approx(12.0)


def test_the_later_of_last_request_and_play_out_decides() -> None:
    t = SessionTracker(30, 15, 100)
    seg(t, "viewer-aa", 0.0, 6.0)
    pl(t, "viewer-aa", 20.0)  # a playlist reload after the media played out
    assert t.expire(49.999) == 0
    assert t.expire(50.0) == 1
    assert t.watch_seconds_by_title["film"] == pytest.approx(20.0)


def test_a_stall_restarts_the_play_out_clock() -> None:
    t = SessionTracker(30, 15, 100)
    seg(t, "viewer-aa", 0.0, 6.0)  # plays out at 6
    seg(t, "viewer-aa", 20.0, 6.0)  # the buffer was dry from 6 to 20: plays out at 26
    assert t.expire(55.999) == 0 and t.expire(56.0) == 1


def test_cmcd_tightens_the_play_out() -> None:
    t = SessionTracker(30, 15, 100)
    for i in range(20):
        seg(t, "viewer-aa", 0.05 * i)  # 120 s of media fetched at once
    # the player says it holds 10 s: it seeked, or dropped what it fetched (the rule allows
    # one more segment, which may not be in its buffer yet)
    seg(t, "viewer-aa", 2.0, 6.0, cmcd=Playback(bl=10.0))
    assert t.expire(2.0 + 22.0 + 30 - 1e-6) == 0
    assert t.expire(2.0 + 22.0 + 30) == 1
    # a seek (su) drops the buffered estimate; pr is the player's rate
    for i in range(20):
        seg(t, "viewer-bb", 100.0 + 0.05 * i)
    seg(t, "viewer-bb", 101.0, 6.0, cmcd=Playback(su=True, pr=2.0))
    assert t.expire(101.0 + 6.0 + 30 - 1e-6) == 0
    assert t.expire(101.0 + 6.0 + 30) == 1


def test_audio_plays_beside_the_video_and_text_counts_nothing() -> None:
    t = SessionTracker(30, 15, 100)
    for i in range(10):  # 60 s of video and 60 s of separate audio, interleaved
        seg(t, "viewer-aa", 0.1 * i)
        seg(t, "viewer-aa", 0.1 * i + 0.05, rendition="audio", track=AUDIO)
        seg(t, "viewer-aa", 0.1 * i + 0.06, rendition="subs", track=TEXT)
    assert t.active_by_label()[("film", "720p")] == 1  # audio and text never relabel it
    seg(t, "viewer-aa", 1.0, 6.0, rendition="audio", track=AUDIO)  # audio now plays until 66
    r = SessionTracker.restore(json.loads(json.dumps(t.snapshot(2.0))), 2.0, idle_timeout=30,
                               peak_window=15, max_active=100)
    for tracker in (t, r):  # the later of the two tracks, never their sum; kept across restarts
        assert tracker.expire(66.05 + 30 - 1e-6) == 0
        assert tracker.expire(66.05 + 30) == 1


def test_watch_seconds_are_exported_while_sessions_are_active() -> None:
    t = SessionTracker(30, 15, 100)
    for i in range(20):
        seg(t, "viewer-aa", 100.0 + 0.05 * i)
    t.expire(100.0 + 29)
    assert t.watch_seconds_by_title.get("film", 0.0) == 0.0  # settled up to 30 s ago
    readings = []
    for now in (140.0, 160.0, 200.0, 250.0, 260.0):
        t.expire(now)
        readings.append(t.watch_seconds_by_title["film"])
    assert readings == pytest.approx([10.0, 30.0, 70.0, 120.0, 120.0])
    assert t.active == 0  # ended at 100 + 120 + 30 = 250


def test_new_session_starts_at_its_segment_label_and_follows_main_segments() -> None:
    t = SessionTracker(30, 15, 100)
    seg(t, "viewer-aa", 1, 0, rendition="360p")
    pl(t, "viewer-aa", 2)  # a playlist keeps the label
    assert t.active_by_label() == {("film", "360p"): 1}
    seg(t, "viewer-aa", 3, 0, title="other", rendition="1080p")
    assert t.active_by_label() == {("film", "360p"): 0, ("other", "1080p"): 1}


def test_max_active_evicts_starting_sessions_then_refuses() -> None:
    t = SessionTracker(10, 15, 2)
    pl(t, "viewer-01", 0)
    seg(t, "viewer-02", 0, 0)
    assert seg(t, "viewer-03", 1, 0)  # the starting one made room: it was no view
    assert (t.evicted, t.refused, t.active, t.starting) == (1, 0, 2, 0)
    assert not seg(t, "viewer-04", 1, 0) and not pl(t, "viewer-05", 1)
    assert t.refused == 2 and t.views == 2
    assert not seg(t, "viewer-02", 2, 0)  # existing ones still touch
    assert seg(t, "viewer-04", 11.0, 0)  # viewer-03 idled out at 11
    assert t.active == 2 and t.refused == 2


def test_label_table_is_bounded() -> None:
    t = SessionTracker(10, 15, 1000, max_labels=3)
    for i in range(10):
        seg(t, f"viewer-{i:03}", 0, title=f"t{i}", rendition="r")
    labels = t.active_by_label()
    assert len(labels) == 4 and labels[(OTHER, OTHER)] == 7
    assert sum(labels.values()) == 10 and len(t.views_by_title) == 4


def test_many_viewers_random_interleaving_counts_exactly() -> None:
    rng = random.Random(7)
    n, timeout = 5000, 30.0
    t = SessionTracker(timeout, 15, 1_000_000)
    sids = [new_sid() for _ in range(n)]
    first: dict[str, float] = {}
    until: dict[str, float] = {}
    seen: set[str] = set()
    now = 0.0
    opened = 0
    for _ in range(40_000):  # each viewer ~8 requests, interleaved at random
        sid = rng.choice(sids)
        now += rng.random() * 0.001  # ~20 s in all: nobody idles out
        seen.add(sid)
        if rng.random() < 0.2:
            pl(t, sid, now, nbytes=100)
            until[sid] = max(until.get(sid, now), now)
            continue
        opened += seg(t, sid, now, 2.0, nbytes=100)
        start = first.setdefault(sid, now)
        until[sid] = max(until.get(sid, start), now) + 2.0
    assert opened == t.views == len(first) == t.active
    assert t.starting == len(seen) - len(first) and t.peak == t.active and t.refused == 0
    assert sum(t.active_by_label().values()) == t.active
    assert t.bytes_by_title == {"film": 4_000_000}
    cutoff = now + timeout - 1e-9
    early = sum(1 for s in first if until[s] + timeout <= cutoff)
    assert 0 < early < len(first)
    assert t.expire(cutoff) == early
    assert t.expire(max(until.values()) + timeout) == len(first) - early
    assert t.active == 0 and t.starting == 0 and t.peak == len(first)
    assert t.watch_seconds_by_title["film"] == pytest.approx(
        sum(until[s] - first[s] for s in first))
    assert t.views_by_title == {"film": len(first)}


def test_peak_and_peak_recent_with_fake_clock() -> None:
    t = SessionTracker(10, 15, 1000)
    for i in range(5):
        seg(t, f"viewer-{i:03}", float(i), 0)  # 5 active at t=4
    assert t.peak == 5 and t.peak_time == 4.0
    assert t.peak_recent(4.0) == 5
    for i in range(2):  # two keep watching until 20
        for now in range(5, 21):
            seg(t, f"viewer-{i:03}", float(now), 0)
    t.expire(20.0)  # the other three ended at 12, 13, 14
    assert t.active == 2
    assert t.peak_recent(20.0) == 5  # 5 held until 12, inside [5, 20]
    assert t.peak_recent(20.0) == 5  # reading resets nothing
    assert t.peak_recent(26.9) == 5  # window [11.9, 26.9] still sees 5 (until 12)
    assert t.peak_recent(27.0) == 4  # 4 held until 13
    assert t.peak_recent(28.5) == 3
    assert t.peak_recent(29.0) == 2
    assert t.peak == 5 and t.peak_time == 4.0


def test_ends_are_taken_in_time_order_across_idle_and_play_out() -> None:
    t = SessionTracker(10, 30, 100)
    seg(t, "viewer-lo", 0.0, 30.0)  # idle at 10, plays until 30: ends 40
    seg(t, "viewer-hi", 1.0, 0.0)  # ends 11
    seg(t, "viewer-mid", 2.0, 20.0)  # ends 32
    assert t.expire(100.0) == 3
    # the sliding peak saw 3 until 11, 2 until 32, 1 until 40
    assert t.peak_recent(41.0) == 2 and t.peak_recent(62.0) == 1 and t.peak_recent(70.5) == 0


def test_a_request_during_the_play_out_tail_keeps_the_same_session() -> None:
    t = SessionTracker(10, 15, 100)
    seg(t, "viewer-aa", 0.0, 60.0)  # idle at 10, plays until 60
    t.expire(30.0)  # past its idle deadline: it waits in the play-out calendar
    assert t.active == 1
    assert not pl(t, "viewer-aa", 40.0)  # the player reloads its playlist: no new view
    assert not seg(t, "viewer-aa", 45.0, 6.0)  # and fetches on: chained after 60
    assert (t.views, t.active) == (1, 1)
    assert t.expire(75.999) == 0 and t.expire(76.0) == 1
    assert t.watch_seconds_by_title == {"film": pytest.approx(66.0)}


def test_peak_recent_deque_stays_bounded() -> None:
    t = SessionTracker(1, 15, 1_000_000)
    now = 0.0
    for i in range(20_000):  # a slow decline and rise: many distinct values per window
        now += 0.001
        seg(t, f"viewer-{i:05}", now, 0.5)
        if i % 3 == 0:
            t.expire(now)
    assert len(t._recent) <= 300  # the RecentPeak deque
    assert t.peak_recent(now) >= t.active


def test_a_snapshot_never_pins_the_watch_of_a_session_already_over() -> None:
    """Found by the state machine below: one viewer's title change settles watch time to now -
    idle_timeout while another viewer, idle past its deadline, has not been expired yet; a
    snapshot taken then must not export (and so pin: a counter never goes back) its seconds."""
    t = SessionTracker(5, 7, 6)
    seg(t, "viewer-01", 0.0, 0.0, title="a")          # watched until 0, ends at 5
    seg(t, "viewer-00", 4.5, 0.0, title="b")
    seg(t, "viewer-00", 5.5, 0.0, title="a")          # a title change: watch settles to 0.5
    assert not t.snapshot(5.5)["watch_seconds_by_title"].get("a")
    t.expire(5.5)
    assert not t.watch_seconds_by_title.get("a")


def test_snapshot_restore_round_trip() -> None:
    t = SessionTracker(30, 15, 100)
    seg(t, "viewer-cc", 90.0, 0.0, title="b")
    pl(t, "viewer-aa", 99.0, title="a")
    seg(t, "viewer-aa", 100.0, 0.0, title="a", rendition="r0", nbytes=10)
    seg(t, "viewer-bb", 105.0, 0.0, title="b")  # the peak: 3
    seg(t, "viewer-aa", 110.0, 60.0, title="a", rendition="r1", nbytes=20)  # plays until 170
    pl(t, "viewer-dd", 115.0, title="b")  # starting
    t.expire(121.0)  # viewer-cc (last 90) ended at 120
    state = json.loads(json.dumps(t.snapshot(121.0)))
    # a restart: a new clock that reads 5000 when the old one read 121
    r = SessionTracker.restore(state, 5000.0, idle_timeout=30, peak_window=15, max_active=100)
    assert (r.peak, r.views, r.active, r.starting) == (t.peak, t.views, 2, 1)
    assert r.peak_time == pytest.approx(5000.0 - (121.0 - 105.0))
    assert r.views_by_title == t.views_by_title and r.bytes_by_title == t.bytes_by_title
    assert r.watch_seconds_by_title == pytest.approx(t.watch_seconds_by_title)
    assert {k: n for k, n in r.active_by_label().items() if n} == {("a", "r1"): 1,
                                                                   ("b", "720p"): 1}
    # idle time kept: viewer-bb was idle 16 s, so it ends 14 s after the restart; viewer-aa
    # still plays for 49 s and ends 30 s after that
    assert r.expire(5013.9) == 0 and r.expire(5014.0) == 1
    assert r.expire(5000.0 + 49 + 30 - 1e-6) == 0 and r.expire(5000.0 + 49 + 30) == 1
    assert r.starting == 0  # viewer-dd, idle since 115, ended at 5024


def test_a_state_file_of_the_first_version_still_restores() -> None:
    old = {"version": 1, "peak": 4, "peak_age": 10.0, "views": 9, "refused": 0,
           "views_by_title": {"a": 9}, "watch_seconds_by_title": {"a": 100.0},
           "bytes_by_title": {}, "sessions": [["viewer-aa", "a", "r1", 20.0, 5.0]]}
    r = SessionTracker.restore(old, 1000.0, idle_timeout=30, peak_window=15, max_active=10)
    assert (r.active, r.views, r.peak) == (1, 9, 4)
    assert r.expire(1024.9) == 0 and r.expire(1025.0) == 1
    assert r.watch_seconds_by_title == pytest.approx({"a": 115.0})


@pytest.mark.parametrize("bad", [{}, {"version": 3}, {"version": 1, "peak": 1}, [],
                                 {"version": 2, "peak": 1, "peak_age": None, "views": 1,
                                  "refused": 0, "views_by_title": {},
                                  "watch_seconds_by_title": {}, "watch_ended_by_title": {},
                                  "bytes_by_title": {}, "sessions": [["k", "t", "r", "x"]],
                                  "starting": []}])
def test_restore_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        SessionTracker.restore(bad, 0.0, idle_timeout=1, peak_window=1,  # type: ignore[arg-type]
                               max_active=1)


# ---------------------------------------------------------------- state machine vs a model

INF = float("inf")


@dataclass
class Open:
    starting: bool
    first: float
    last: float
    title: str
    rendition: str
    episode: int = -1
    play: float = 0.0
    alt: float = 0.0
    seq: int = 0

    def deadline(self, timeout: float) -> float:
        if self.starting:
            return self.last + timeout
        return max(self.last, self.play, self.alt) + timeout


class Model:
    """The obvious O(n) implementation of the same rules, with full history."""

    def __init__(self, timeout: float, window: float, cap: int, scale: float) -> None:
        self.timeout, self.window, self.cap, self.scale = timeout, window, cap, scale
        self.open: dict[str, Open] = {}
        self.episodes: list[tuple[float, float]] = []  # (first, end); end = inf while open
        self.views = self.refused = self.evicted = self.seq = 0
        self.watch: dict[str, float] = {}

    def expire(self, now: float) -> int:
        ended = 0
        for k, v in list(self.open.items()):
            d = v.deadline(self.timeout)
            if now >= d:
                del self.open[k]
                if not v.starting:
                    ended += 1
                    self.episodes[v.episode] = (self.episodes[v.episode][0], d)
                    until = max(v.last, v.play, v.alt)
                    self.watch[v.title] = self.watch.get(v.title, 0.0) + until - v.first
        return ended

    def _play(self, v: Open, now: float, media: float, track: int,
              cmcd: Playback | None) -> None:
        track = track_for(track, cmcd)
        rate = rate_of(self.scale, cmcd)
        if track == MAIN:
            v.play = advance(v.play, now, media, rate, cmcd)
        elif track == AUDIO:
            v.alt = advance(v.alt, now, media, rate, cmcd)

    def _start(self, key: str, now: float, title: str, rendition: str, media: float,
               track: int, cmcd: Playback | None) -> bool:
        v = Open(False, now, now, title, rendition, len(self.episodes), now, 0.0, self.seq)
        self.episodes.append((now, INF))
        self.views += 1
        self._play(v, now, media, track, cmcd)
        self.open[key] = v
        return True

    def touch(self, key: str, now: float, title: str, rendition: str | None, media: float,
              track: int, cmcd: Playback | None) -> bool:
        self.seq += 1
        v = self.open.get(key)
        if v is not None and now < v.deadline(self.timeout):
            if v.starting:
                if rendition is None:
                    v.last, v.seq = now, self.seq
                    return False
                del self.open[key]
                self.expire(now)
                return self._start(key, now, title, rendition, media, track, cmcd)
            if rendition is not None:
                if track_for(track, cmcd) in (MAIN, NO_MEDIA) and (v.title, v.rendition) != (
                        title, rendition):
                    tau = now - self.timeout
                    if v.title != title and v.first <= tau:
                        self.watch[v.title] = self.watch.get(v.title, 0.0) + tau - v.first
                        v.first = tau
                    v.title, v.rendition = title, rendition
                self._play(v, now, media, track, cmcd)
            v.last, v.seq = now, self.seq
            return False
        self.expire(now)
        if len(self.open) >= self.cap:
            starting = [k for k, o in self.open.items() if o.starting]
            if not starting:
                self.refused += 1
                return False
            del self.open[min(starting, key=lambda k: self.open[k].seq)]
            self.evicted += 1
        if rendition is None:
            self.open[key] = Open(True, now, now, title, NO_RENDITION, seq=self.seq)
            return False
        return self._start(key, now, title, rendition, media, track, cmcd)

    def watch_now(self, now: float) -> dict[str, float]:
        tau = now - self.timeout
        out = dict(self.watch)
        for v in self.open.values():
            if not v.starting and v.first <= tau:
                out[v.title] = out.get(v.title, 0.0) + tau - v.first
        return {k: x for k, x in out.items() if x > 1e-9}

    def f(self, t: float) -> int:
        return sum(1 for first, end in self.episodes if first <= t < end)

    def peak(self) -> int:
        return max((self.f(first) for first, _ in self.episodes), default=0)

    def peak_recent(self, now: float) -> int:
        start = now - self.window
        points = [start] + [first for first, _ in self.episodes if start <= first <= now]
        return max(self.f(p) for p in points)


KEYS = [f"viewer-{i:02}" for i in range(12)]
CMCD = [None, None, None, Playback(bl=1.5), Playback(su=True), Playback(bs=True),
        Playback(pr=2.0), Playback(pr=0.0), Playback(ot="a"), Playback(ot="i")]


class TrackerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.t = SessionTracker(5, 7, 6, time_scale=2.0)
        self.m = Model(5, 7, 6, 2.0)

    @rule(key=st.sampled_from(KEYS), title=st.sampled_from(["a", "b"]),
          rendition=st.sampled_from([None, None, "r1", "r2"]),
          media=st.sampled_from([0.0, 1.0, 3.0, 8.0]), track=st.sampled_from([MAIN, MAIN, AUDIO]),
          cmcd=st.sampled_from(CMCD))
    def touch(self, key: str, title: str, rendition: str | None, media: float, track: int,
              cmcd: Playback | None) -> None:
        got = self.t.touch(key, self.now, title=title, rendition=rendition, media=media,
                           track=track, cmcd=cmcd)
        assert got == self.m.touch(key, self.now, title, rendition, media, track, cmcd)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 7.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        assert self.t.expire(self.now) == self.m.expire(self.now)
        assert self.t.active == sum(1 for v in self.m.open.values() if not v.starting)
        assert self.t.starting == sum(1 for v in self.m.open.values() if v.starting)
        assert self.t.peak_recent(self.now) == self.m.peak_recent(self.now)
        labels: dict[tuple[str, str], int] = {}
        for v in self.m.open.values():
            if not v.starting:
                labels[(v.title, v.rendition)] = labels.get((v.title, v.rendition), 0) + 1
        assert {k: v for k, v in self.t.active_by_label().items() if v} == labels
        got = {k: x for k, x in self.t.watch_seconds_by_title.items() if x > 1e-9}
        assert got == pytest.approx(self.m.watch_now(self.now))

    @precondition(lambda self: self.now > 0)
    @rule()
    def snapshot_restore(self) -> None:
        state = json.loads(json.dumps(self.t.snapshot(self.now)))
        self.m.expire(self.now)             # a snapshot ends what is due first, as readers do
        r = SessionTracker.restore(state, self.now, idle_timeout=5, peak_window=7,
                                   max_active=6, time_scale=2.0)
        alive = [v for v in self.m.open.values() if self.now < v.deadline(5)]
        assert r.active == sum(1 for v in alive if not v.starting)
        assert r.starting == sum(1 for v in alive if v.starting)
        assert r.views == self.t.views and r.peak == self.t.peak

    @invariant()
    def counts_agree(self) -> None:
        assert sum(self.t.active_by_label().values()) == self.t.active
        assert self.t.views == self.m.views and self.t.refused == self.m.refused
        assert self.t.evicted == self.m.evicted
        assert self.t.peak == self.m.peak() >= 0
        assert sum(self.t.views_by_title.values()) == self.t.views


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
