"""Tests of edge360.ratelimit with a fake clock: bursts, refill, windows and the memory bound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.security.ratelimit import TokenBucketLimiter, WindowCounter


def test_burst_then_refill() -> None:
    lim = TokenBucketLimiter(rate=2.0, burst=5.0, max_keys=10)
    assert [lim.check("a", 100.0) for _ in range(5)] == [0.0] * 5
    assert lim.check("a", 100.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert lim.check("a", 100.25) == pytest.approx(0.25)
    assert lim.check("a", 100.5) == 0.0
    assert lim.check("a", 100.5) == pytest.approx(0.5)
    # a long pause refills to the burst, never beyond it
    assert [lim.check("a", 1000.0) for _ in range(6)][-2:] == [0.0, pytest.approx(0.5)]


def test_keys_are_independent() -> None:
    lim = TokenBucketLimiter(rate=1.0, burst=1.0, max_keys=10)
    assert lim.check("a", 0.0) == 0.0
    assert lim.check("a", 0.0) > 0
    assert lim.check("b", 0.0) == 0.0


def test_rate_zero_is_off() -> None:
    lim = TokenBucketLimiter(rate=0.0, burst=0.0, max_keys=10)
    assert all(lim.check("a", 0.0) == 0.0 for _ in range(1000))
    assert len(lim) == 0


@pytest.mark.parametrize(("rate", "burst", "allowed_at_once"), [
    (3.0, 0.0, 3), (3.0, 10.0, 10), (0.2, 0.0, 1), (0.2, 0.5, 1), (2.5, 0.0, 2),
])
def test_burst_defaults(rate: float, burst: float, allowed_at_once: int) -> None:
    lim = TokenBucketLimiter(rate=rate, burst=burst, max_keys=10)
    results = [lim.check("a", 50.0) for _ in range(allowed_at_once + 1)]
    assert results[:-1] == [0.0] * allowed_at_once
    assert results[-1] > 0


def test_clock_stepping_back_adds_nothing() -> None:
    lim = TokenBucketLimiter(rate=1.0, burst=1.0, max_keys=10)
    assert lim.check("a", 100.0) == 0.0
    assert lim.check("a", 50.0) > 0
    assert lim.check("a", 99.0) == pytest.approx(2.0)  # one second from t=100, not from 99
    assert lim.check("a", 101.0) == 0.0


@pytest.mark.parametrize("kwargs", [
    {"rate": -1.0, "burst": 1.0, "max_keys": 1},
    {"rate": float("nan"), "burst": 1.0, "max_keys": 1},
    {"rate": 1.0, "burst": float("inf"), "max_keys": 1},
    {"rate": 1.0, "burst": 1.0, "max_keys": 0},
])
def test_bucket_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(**kwargs)  # type: ignore[arg-type]


def test_bucket_memory_bound_under_many_keys() -> None:
    lim = TokenBucketLimiter(rate=1.0, burst=2.0, max_keys=1000)
    rng = random.Random(7)
    for i in range(100_000):
        lim.check(f"{rng.getrandbits(64):x}", i * 0.001)
        assert len(lim) <= 1000
    assert len(lim) == 1000


def test_least_recently_seen_is_dropped_first() -> None:
    lim = TokenBucketLimiter(rate=1.0, burst=1.0, max_keys=2)
    lim.check("old", 0.0)
    lim.check("busy", 0.0)
    assert lim.check("old", 0.1) > 0  # touching "old" makes "busy" the least recent
    lim.check("new", 0.2)  # evicts "busy"
    assert lim.check("old", 0.3) > 0  # still remembered: still limited
    assert lim.check("busy", 0.3) == 0.0  # forgotten: starts with a full bucket (documented)


times = st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200).map(
    lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))])


@given(st.floats(0.1, 20), st.floats(0, 10), times)
def test_bucket_never_exceeds_burst_plus_rate(rate: float, burst: float, ts: list[float]) -> None:
    lim = TokenBucketLimiter(rate=rate, burst=burst, max_keys=4)
    allowed = [t for t in ts if lim.check("k", t) == 0.0]
    capacity = lim.burst
    for i, start in enumerate(allowed):
        for end in allowed[i:]:
            count = sum(1 for t in allowed if start <= t <= end)
            assert count <= capacity + rate * (end - start) + 1e-9


@given(st.floats(0.1, 20), st.floats(0, 10), times)
def test_retry_after_is_exact(rate: float, burst: float, ts: list[float]) -> None:
    lim = TokenBucketLimiter(rate=rate, burst=burst, max_keys=4)
    for t in ts:
        wait = lim.check("k", t)
        if wait > 0:
            # a retry just after the advertised wait succeeds ...
            probe = TokenBucketLimiter(rate=rate, burst=burst, max_keys=4)
            probe._buckets = lim._buckets.copy()
            assert probe.check("k", t + wait * (1 + 1e-9) + 1e-9) == 0.0
            # ... and one clearly before it does not
            probe._buckets = lim._buckets.copy()
            assert probe.check("k", t + wait * 0.9) > 0


# --- WindowCounter ---

def test_window_counter_table() -> None:
    wc = WindowCounter(limit=3, window=60.0, max_keys=10)
    assert [wc.allow("ip", t) for t in (0.0, 1.0, 2.0, 3.0, 59.9)] == [True] * 3 + [False] * 2
    assert wc.allow("other", 30.0)
    assert [wc.allow("ip", t) for t in (60.0, 60.0, 61.0, 62.0)] == [True] * 3 + [False]


def test_window_limit_zero_is_off() -> None:
    wc = WindowCounter(limit=0, window=60.0, max_keys=10)
    assert all(wc.allow("ip", 0.0) for _ in range(1000))


def test_window_rejects_bad_parameters() -> None:
    for args in ((-1, 60.0, 10), (1, 0.0, 10), (1, float("nan"), 10), (1, 60.0, 0)):
        with pytest.raises(ValueError):
            WindowCounter(*args)


def test_window_memory_bound_under_many_keys() -> None:
    wc = WindowCounter(limit=5, window=60.0, max_keys=500)
    rng = random.Random(11)
    for i in range(100_000):
        wc.allow(str(rng.random()), i * 0.01)
        assert len(wc) <= 500
    assert len(wc) == 500


@given(st.integers(1, 6), st.floats(0.5, 10), times)
def test_window_is_the_greedy_policy(limit: int, window: float, ts: list[float]) -> None:
    # spec: a window opens at an admitted event and admits `limit` events within `window` seconds;
    # an event is refused exactly when its window already holds `limit`
    wc = WindowCounter(limit=limit, window=window, max_keys=4)
    start, count = None, 0
    for t in ts:
        if start is None or t >= start + window:
            start, count = t, 0
        expect = count < limit
        count += expect
        assert wc.allow("k", t) is expect


@given(st.integers(1, 6), st.floats(0.5, 10), times)
def test_window_sliding_bound(limit: int, window: float, ts: list[float]) -> None:
    wc = WindowCounter(limit=limit, window=window, max_keys=4)
    allowed = [t for t in ts if wc.allow("k", t)]
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + window) <= 2 * limit
