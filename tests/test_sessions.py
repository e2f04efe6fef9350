"""Tests of edge360.sessions: identity precedence, CMCD parsing, and the tracker against a model."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge360.sessions.identity import cmcd_sid, fallback_key, identity, new_sid, valid_sid
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

def test_many_viewers_random_interleaving_counts_exactly() -> None:
    rng = random.Random(7)
    n, timeout = 5000, 30.0
    t = SessionTracker(timeout, 15, 1_000_000)
    sids = [new_sid() for _ in range(n)]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    now = 0.0
    opened = 0
    for _ in range(40_000):  # each viewer ~8 requests, interleaved at random
        sid = rng.choice(sids)
        now += rng.random() * 0.001  # ~20 s in all: nobody idles out
        seg = rng.random() < 0.8
        opened += t.touch(sid, now, title="film", rendition="720p" if seg else None, nbytes=100)
        first.setdefault(sid, now)
        last[sid] = now
    assert opened == t.views == len(first) == t.active
    assert t.peak == t.active and t.refused == 0
    assert sum(t.active_by_label().values()) == t.active
    assert t.bytes_by_title == {"film": 4_000_000}
    cutoff = now + timeout - 1e-9
    early = sum(1 for s in last if cutoff - last[s] >= timeout)
    assert 0 < early < len(first)
    assert t.expire(cutoff) == early
    assert t.expire(now + timeout) == len(first) - early
    assert t.active == 0 and t.peak == len(first)
    expected = sum(last[s] - first[s] for s in first)
    assert t.watch_seconds_by_title["film"] == pytest.approx(expected)
    assert t.views_by_title == {"film": len(first)}


def test_expiry_exactly_at_idle_timeout() -> None:
    t = SessionTracker(30, 15, 100)
    assert t.touch("viewer-aa", 0.0, title="a", rendition=None)
    assert not t.touch("viewer-aa", 10.0, title="a", rendition="r1")
    assert t.expire(39.999) == 0 and t.active == 1
    assert t.expire(40.0) == 1 and t.active == 0
    assert t.watch_seconds_by_title == {"a": 10.0}
    # a request exactly one idle timeout after the last opens a new session (a new view)
    assert t.touch("viewer-bb", 100.0, title="a", rendition=None)
    assert not t.touch("viewer-bb", 129.5, title="a", rendition=None)
    assert t.touch("viewer-bb", 159.5, title="a", rendition=None)
    assert t.views == 3 and t.active == 1
    assert t.watch_seconds_by_title == {"a": 39.5}


def test_new_session_starts_at_none_and_follows_latest_segment() -> None:
    t = SessionTracker(30, 15, 100)
    t.touch("viewer-aa", 0, title="a", rendition=None)
    assert t.active_by_label() == {("a", NO_RENDITION): 1}
    t.touch("viewer-aa", 1, title="a", rendition="360p")
    t.touch("viewer-aa", 2, title="a", rendition=None)  # a playlist keeps the label
    assert t.active_by_label() == {("a", NO_RENDITION): 0, ("a", "360p"): 1}
    t.touch("viewer-aa", 3, title="b", rendition="1080p")
    assert t.active_by_label()[("b", "1080p")] == 1 and t.active_by_label()[("a", "360p")] == 0
    t.touch("viewer-zz", 3, title="c", rendition="720p")  # first request is a segment
    assert t.active_by_label()[("c", "720p")] == 1


def test_max_active_refuses_and_counts() -> None:
    t = SessionTracker(10, 15, 2)
    assert t.touch("viewer-01", 0, title="a", rendition=None)
    assert t.touch("viewer-02", 0, title="a", rendition=None)
    assert not t.touch("viewer-03", 1, title="a", rendition=None)
    assert t.refused == 1 and t.active == 2 and t.views == 2
    assert not t.touch("viewer-01", 2, title="a", rendition=None)  # existing ones still touch
    assert t.touch("viewer-03", 10.0, title="a", rendition=None)  # viewer-02 idled out first
    assert t.active == 2 and t.refused == 1


def test_label_table_is_bounded() -> None:
    t = SessionTracker(10, 15, 1000, max_labels=3)
    for i in range(10):
        t.touch(f"viewer-{i:03}", 0, title=f"t{i}", rendition="r")
    labels = t.active_by_label()
    assert len(labels) == 4 and labels[(OTHER, OTHER)] == 7
    assert sum(labels.values()) == 10 and len(t.views_by_title) == 4


def test_peak_and_peak_recent_with_fake_clock() -> None:
    t = SessionTracker(10, 15, 1000)
    for i in range(5):
        t.touch(f"viewer-{i:03}", float(i), title="a", rendition=None)  # 5 active at t=4
    assert t.peak == 5 and t.peak_time == 4.0
    assert t.peak_recent(4.0) == 5
    for i in range(2):  # two keep watching until 20
        for now in range(5, 21):
            t.touch(f"viewer-{i:03}", float(now), title="a", rendition="r")
    t.expire(20.0)  # the other three ended at 12, 13, 14
    assert t.active == 2
    assert t.peak_recent(20.0) == 5  # 5 held until 12, inside [5, 20]
    assert t.peak_recent(20.0) == 5  # reading resets nothing
    assert t.peak_recent(26.9) == 5  # window [11.9, 26.9] still sees 5 (until 12)
    assert t.peak_recent(27.0) == 4  # 4 held until 13
    assert t.peak_recent(28.5) == 3
    assert t.peak_recent(29.0) == 2
    assert t.peak == 5 and t.peak_time == 4.0


def test_peak_recent_deque_stays_bounded() -> None:
    t = SessionTracker(1, 15, 1_000_000)
    now = 0.0
    for i in range(20_000):  # a slow decline and rise: many distinct values per window
        now += 0.001
        t.touch(f"viewer-{i:05}", now, title="a", rendition=None)
        if i % 3 == 0:
            t.expire(now)
    assert len(t._recent) <= 300
    assert t.peak_recent(now) >= t.active


def test_snapshot_restore_round_trip() -> None:
    t = SessionTracker(30, 15, 100)
    t.touch("viewer-cc", 90.0, title="b", rendition=None)
    t.touch("viewer-aa", 100.0, title="a", rendition=None, nbytes=10)
    t.touch("viewer-bb", 105.0, title="b", rendition=None)  # the peak: 3
    t.touch("viewer-aa", 110.0, title="a", rendition="r1", nbytes=20)
    t.expire(121.0)  # viewer-cc (last 90) ended at 120
    state = json.loads(json.dumps(t.snapshot(121.0)))
    # a restart: a new clock that reads 5000 when the old one read 121
    r = SessionTracker.restore(state, 5000.0, idle_timeout=30, peak_window=15, max_active=100)
    assert (r.peak, r.views, r.active) == (t.peak, t.views, 2)
    assert r.peak_time == pytest.approx(5000.0 - (121.0 - 105.0))
    assert r.views_by_title == t.views_by_title and r.bytes_by_title == t.bytes_by_title
    assert r.watch_seconds_by_title == t.watch_seconds_by_title
    assert r.active_by_label() == {("a", "r1"): 1, ("b", NO_RENDITION): 1}
    # idle time kept: viewer-bb was idle 16 s, so it ends 14 s after the restart
    assert not r.touch("viewer-aa", 5010.0, title="a", rendition="r1")
    assert r.expire(5013.9) == 0 and r.expire(5014.0) == 1
    assert r.watch_seconds_by_title["b"] == pytest.approx(0.0)
    assert r.snapshot(5014.0)["sessions"][0][0] == "viewer-aa"


@pytest.mark.parametrize("bad", [{}, {"version": 2}, {"version": 1, "peak": 1}, []])
def test_restore_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        SessionTracker.restore(bad, 0.0, idle_timeout=1, peak_window=1,  # type: ignore[arg-type]
                               max_active=1)


# ---------------------------------------------------------------- state machine vs a model

@dataclass
class Open:
    first: int
    last: int
    title: str
    rendition: str
    episode: int


class Model:
    """The obvious O(n) implementation of the same rules, with full history."""

    def __init__(self, timeout: int, window: int, cap: int) -> None:
        self.timeout, self.window, self.cap = timeout, window, cap
        self.open: dict[str, Open] = {}
        self.episodes: list[tuple[int, float]] = []  # (first, end); end = inf while open
        self.views = self.refused = 0
        self.watch: dict[str, float] = {}

    def expire(self, now: int) -> int:
        gone = [k for k, v in self.open.items() if now >= v.last + self.timeout]
        for k in gone:
            v = self.open.pop(k)
            self.watch[v.title] = self.watch.get(v.title, 0.0) + v.last - v.first
            self.episodes[v.episode] = (v.first, v.last + self.timeout)
        return len(gone)

    def touch(self, key: str, now: int, title: str, rendition: str | None) -> bool:
        s = self.open.get(key)
        if s is not None and now < s.last + self.timeout:
            s.last = now
            if rendition is not None:
                s.title, s.rendition = title, rendition
            return False
        self.expire(now)
        if len(self.open) >= self.cap:
            self.refused += 1
            return False
        self.open[key] = Open(now, now, title, rendition or NO_RENDITION, len(self.episodes))
        self.episodes.append((now, float("inf")))
        self.views += 1
        return True

    def f(self, t: float) -> int:
        return sum(1 for first, end in self.episodes if first <= t < end)

    def peak(self) -> int:
        return max((self.f(first) for first, _ in self.episodes), default=0)

    def peak_recent(self, now: int) -> int:
        start = now - self.window
        points = [start] + [first for first, _ in self.episodes if start <= first <= now]
        return max(self.f(p) for p in points)


KEYS = [f"viewer-{i:02}" for i in range(12)]


class TrackerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.t = SessionTracker(5, 7, 6)
        self.m = Model(5, 7, 6)

    @rule(key=st.sampled_from(KEYS), title=st.sampled_from(["a", "b"]),
          rendition=st.sampled_from([None, "r1", "r2"]))
    def touch(self, key: str, title: str, rendition: str | None) -> None:
        got = self.t.touch(key, float(self.now), title=title, rendition=rendition)
        assert got == self.m.touch(key, self.now, title, rendition)

    @rule(dt=st.integers(0, 8))
    def advance(self, dt: int) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        assert self.t.expire(float(self.now)) == self.m.expire(self.now)
        assert self.t.active == len(self.m.open)
        assert self.t.peak_recent(float(self.now)) == self.m.peak_recent(self.now)
        labels: dict[tuple[str, str], int] = {}
        for v in self.m.open.values():
            labels[(v.title, v.rendition)] = labels.get((v.title, v.rendition), 0) + 1
        assert {k: v for k, v in self.t.active_by_label().items() if v} == labels
        assert self.t.watch_seconds_by_title == pytest.approx(self.m.watch)

    @precondition(lambda self: self.now > 0)
    @rule()
    def snapshot_restore(self) -> None:
        state = json.loads(json.dumps(self.t.snapshot(float(self.now))))
        r = SessionTracker.restore(state, float(self.now), idle_timeout=5, peak_window=7,
                                   max_active=6)
        alive = sum(1 for v in self.m.open.values() if self.now < v.last + 5)
        assert r.active == alive and r.views == self.t.views and r.peak == self.t.peak

    @invariant()
    def counts_agree(self) -> None:
        assert sum(self.t.active_by_label().values()) == self.t.active
        assert self.t.views == self.m.views and self.t.refused == self.m.refused
        assert self.t.peak == self.m.peak() >= 0
        assert sum(self.t.views_by_title.values()) == self.t.views


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
