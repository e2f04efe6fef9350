"""Tests of the play-out rule's pure parts: CMCD as players send it (sessions.cmcd), the rule that
chains fetched media into a play-out end (sessions.playout), the calendar that orders ends
(sessions.calendar) and the watch clock (sessions.watch). Tables and Hypothesis, no event loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge360.sessions.calendar import Calendar
from edge360.sessions.cmcd import Playback, pairs, playback
from edge360.sessions.playout import (
    AUDIO,
    MAIN,
    MAX_MEDIA,
    NO_MEDIA,
    TEXT,
    advance,
    rate_of,
    track_for,
    track_of,
)
from edge360.sessions.watch import WatchClock

# ---------------------------------------------------------------- CMCD


@pytest.mark.parametrize(("values", "expected"), [
    ((None, None, None, None, None), None),
    (("", "", None, None, None), None),
    (('sid="abcdefgh",cid="film"', None, None, None, None), None),  # nothing the rule reads
    (("bl=21300,br=3200,ot=v,su", None, None, None, None),
     Playback(bl=21.3, su=True, ot="v")),
    # the header form: keys spread over the four fields (CTA-5004 §2)
    ((None, "bl=6000,mtp=25400", "bs", 'pr=1.5,sid="abcdefgh"', "d=6000,ot=av"),
     Playback(bl=6.0, pr=1.5, bs=True, ot="av")),
    (("bl=100", "bl=9000", None, None, None), Playback(bl=0.1)),  # the first found wins
    (("pr=0", None, None, None, None), Playback(pr=0.0)),
    (("su=?1,bs=?0", None, None, None, None), Playback(su=True)),
    # out of range or malformed values are ignored, the rest is kept
    (("bl=-5,pr=1000,ot=zz,su", None, None, None, None), Playback(su=True)),
    (("bl=1.5e3", None, None, None, None), None),
    # version 2 sends some numbers as inner lists
    (("bl=(21300),br=(3200 1600),pr=(1.5),v=2", None, None, None, None),
     Playback(bl=21.3, pr=1.5)),
    (('bl=4000,cid="a,b",@@@,su', None, None, None, None), Playback(bl=4.0)),
])
def test_playback_keys(values: tuple[str | None, ...], expected: Playback | None) -> None:
    assert playback(*values) == expected


def test_pairs_stop_at_the_first_malformed_member() -> None:
    assert list(pairs('a=1, b , c="x,\\"y", d')) == [
        ("a", "1"), ("b", None), ("c", '"x,\\"y"'), ("d", None)]
    assert list(pairs("ok=1,=,bad")) == [("ok", "1")]
    assert list(pairs(None)) == []


@given(st.builds(Playback, bl=st.none() | st.floats(0, 1e6), pr=st.none() | st.floats(0, 100),
                 su=st.booleans(), bs=st.booleans(),
                 ot=st.none() | st.sampled_from(["a", "v", "i"])))
def test_playback_travels_to_the_hub_and_back(p: Playback) -> None:
    assert Playback.from_wire(p.wire()) == p


@pytest.mark.parametrize("bad", [None, [], [1, 2], "x", [None, None, "no", 1, "zz"]])
def test_a_damaged_wire_form_reads_as_nothing_or_defaults(bad: object) -> None:
    got = Playback.from_wire(bad)
    assert got is None or got == Playback()


# ---------------------------------------------------------------- the rule

@pytest.mark.parametrize(("role", "path", "track"), [
    (None, "/t/v/seg_001.ts", MAIN), ("variant", "/t/v/seg.m4s", MAIN),
    ("audio", "/t/aud/seg.m4s", AUDIO), (None, "/t/a/seg.AAC", AUDIO), (None, "/t/a/s.m4a", AUDIO),
    ("subtitles", "/t/s/seg.vtt", TEXT), (None, "/t/s/seg.vtt", TEXT),
    ("closed-captions", "/t/c/x.ts", TEXT), (None, "/t/v/init.mp4", MAIN),
])
def test_track_of(role: str | None, path: str, track: int) -> None:
    assert track_of(role, path) == track


@pytest.mark.parametrize(("track", "ot", "expected"), [
    (MAIN, None, MAIN), (MAIN, "a", AUDIO), (AUDIO, "v", MAIN), (MAIN, "av", MAIN),
    (MAIN, "i", NO_MEDIA), (MAIN, "tt", TEXT), (MAIN, "c", TEXT), (AUDIO, "k", AUDIO),
])
def test_track_for_refines_with_object_type(track: int, ot: str | None, expected: int) -> None:
    assert track_for(track, None if ot is None else Playback(ot=ot)) == expected


def test_rate_is_the_players_own_else_the_time_scale() -> None:
    assert rate_of(1.0, None) == 1.0
    assert rate_of(60.0, Playback(bl=1.0)) == 60.0
    assert rate_of(60.0, Playback(pr=2.0)) == 2.0
    assert rate_of(1.0, Playback(pr=0.0)) == 0.0


@pytest.mark.parametrize(("end", "now", "media", "rate", "cmcd", "expected"), [
    # chained after what was fetched, while it still plays
    (100.0, 10.0, 6.0, 1.0, None, 106.0),
    (100.0, 10.0, 6.0, 2.0, None, 103.0),  # compressed: 6 media seconds are 3 real ones
    # the buffer ran dry before this segment: the chain restarts now (a stall)
    (5.0, 10.0, 6.0, 1.0, None, 16.0),
    (0.0, 10.0, 0.0, 1.0, None, 10.0),  # an init section: nothing to play
    (100.0, 10.0, 0.0, 1.0, Playback(su=True), 10.0),
    # CMCD only tightens: the player's buffer, this segment, one more still being appended
    (100.0, 10.0, 6.0, 1.0, Playback(bl=4.0), 26.0),
    (12.0, 10.0, 6.0, 1.0, Playback(bl=30.0), 18.0),  # a bigger claim never extends it
    (100.0, 10.0, 6.0, 1.0, Playback(su=True), 22.0),  # start-up or seek: buffer was empty
    (100.0, 10.0, 6.0, 1.0, Playback(bs=True), 22.0),  # starved since the last request
    (12.0, 10.0, 6.0, 1.0, Playback(su=True), 18.0),
    (100.0, 10.0, 6.0, 1.0, Playback(bl=1.0, bs=True), 23.0),  # bl says more than bs
    (100.0, 10.0, 6.0, 2.0, Playback(bl=4.0), 18.0),
    # a paused player (pr=0) plays nothing out: its end stays where it was
    (100.0, 10.0, 6.0, 0.0, Playback(pr=0.0), 100.0),
    (5.0, 10.0, 6.0, 0.0, Playback(pr=0.0), 10.0),
    # an upstream's EXTINF is not trusted to be sane
    (0.0, 10.0, math.nan, 1.0, None, 10.0),
    (0.0, 10.0, -6.0, 1.0, None, 10.0),
    (0.0, 10.0, math.inf, 1.0, None, 10.0 + MAX_MEDIA),
])
def test_advance(end: float, now: float, media: float, rate: float, cmcd: Playback | None,
                 expected: float) -> None:
    assert advance(end, now, media, rate, cmcd) == pytest.approx(expected)


@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 10)), max_size=30),
       st.floats(0.1, 60))
def test_without_stalls_the_end_is_first_plus_media_over_rate(
        steps: list[tuple[float, float]], rate: float) -> None:
    """While the buffer never runs dry the chain is exactly the rule's first segment time plus
    media seconds over the rate; with a stall it is later, never earlier."""
    now = end = 0.0
    total = 0.0
    for gap, media in steps:
        now += gap
        end = advance(end, now, media, rate, None)
        total += media
        assert end >= now
        assert end >= total / rate - 1e-6


# ---------------------------------------------------------------- the calendar

class CalendarMachine(RuleBasedStateMachine):
    """The calendar against a plain dict: same keys, taken in deadline order once due."""

    def __init__(self) -> None:
        super().__init__()
        self.cal = Calendar(0.25)
        self.model: dict[str, float] = {}
        self.now = 0.0

    @rule(key=st.sampled_from([f"k{i}" for i in range(8)]),
          delay=st.floats(0, 5) | st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    def add(self, key: str, delay: float) -> None:
        if key in self.model:
            self.cal.discard(key, self.model.pop(key))
        self.model[key] = self.now + delay
        self.cal.add(key, self.now + delay)

    @rule(key=st.sampled_from([f"k{i}" for i in range(8)]))
    def discard(self, key: str) -> None:
        if key in self.model:
            self.cal.discard(key, self.model.pop(key))

    @rule(dt=st.floats(0, 3) | st.sampled_from([0.0, 0.25, 100.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def take_due(self) -> None:
        taken = []
        for _ in range(20):
            found = self.cal.first(self.now)
            if found is None:
                break
            self.cal.pop(found[1])
            taken.append(found)
        due = sorted((d, k) for k, d in self.model.items() if d <= self.now)
        assert [d for d, _ in taken] == [d for d, _ in due]
        assert {k for _, k in taken} == {k for _, k in due}
        for _, k in taken:
            del self.model[k]

    @invariant()
    def same_size(self) -> None:
        assert len(self.cal) == len(self.model)


TestCalendarMachine = CalendarMachine.TestCase
TestCalendarMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


def test_calendar_jumps_far_ahead_without_walking_every_bucket() -> None:
    cal = Calendar(1e-3)
    cal.add("a", 5.0)
    assert cal.first(1.0) is None
    cal.add("b", 1e9)  # a billion buckets ahead
    assert cal.first(1e9 + 1) == (5.0, "a")
    cal.pop("a")
    assert cal.first(1e9 + 1) == (1e9, "b")


def test_calendar_refuses_a_zero_quantum() -> None:
    with pytest.raises(ValueError):
        Calendar(0.0)


# ---------------------------------------------------------------- the watch clock

@dataclass
class W:
    first: float
    label: tuple[str, str]


def test_watch_is_settled_up_to_tau_and_never_goes_back() -> None:
    w = WatchClock()
    a, b = W(0.0, ("film", "720p")), W(10.0, ("film", "720p"))
    w.started(a)
    w.started(b)
    w.settle(5.0)
    assert w.totals() == {"film": 5.0}  # b has not started by tau
    w.settle(20.0)
    w.ended(a, 18.0)  # ends come after the settle and before any read, as in the tracker
    assert w.totals() == {"film": 28.0}  # a: 18, b: 20 - 10
    w.settle(21.0)
    assert w.totals() == {"film": 29.0}
    w.retitle(b, "other")  # b's 11 s so far stay with "film"; it counts under "other" from 21
    b.label = ("other", "720p")
    w.settle(25.0)
    assert w.totals() == {"film": pytest.approx(29.0), "other": pytest.approx(4.0)}
    w.ended(b, 24.0)
    assert w.totals() == {"film": pytest.approx(29.0), "other": pytest.approx(4.0)}
