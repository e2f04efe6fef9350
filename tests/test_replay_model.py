"""The replay model: calibration checked by an independent recomputation, refusals, the sampler."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge360.core.errors import UsageError
from edge360.replay.model import (
    WatchTime,
    calibrate,
    feasible_peak_range,
    sample_viewers,
    sampled_concurrency,
)

RANGE_PER_VIEW = feasible_peak_range(1.0)


def survival(t: float, w: WatchTime) -> float:
    """S(t) written out again from its definition: finishers + lognormal leavers, capped."""
    if t < 0:
        return 1.0
    if t >= w.runtime_s:
        return 0.0
    if t == 0:
        return 1.0
    z = (math.log(t) - math.log(w.leaver_median_s)) / w.leaver_sigma
    leaver_survives = 0.5 * math.erfc(z / math.sqrt(2))
    return w.finish_share + (1 - w.finish_share) * leaver_survives


def recompute_concurrency(arrivals: list[float], step: float, w: WatchTime) -> list[float]:
    """Arrivals (each bin's mass at its midpoint) convolved with S, by direct summation."""
    n = len(arrivals)
    horizon = int(w.runtime_s // step) + 2
    out = []
    for i in range(n):
        t = i * step
        out.append(sum(arrivals[j] * survival(t - (j + 0.5) * step, w)
                       for j in range(max(0, i - horizon), i)))
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views=st.floats(min_value=1e4, max_value=5e6),
       position=st.floats(min_value=0.02, max_value=0.98))
def test_calibration_hits_views_and_peak_by_independent_recomputation(views: float,
                                                                       position: float) -> None:
    lo, hi = RANGE_PER_VIEW
    peak = views * (lo + position * (hi - lo))
    curve = calibrate(views, peak)
    arrivals = [r * curve.step_s for r in curve.arrival_rate]
    assert abs(sum(arrivals) - views) <= 0.01 * views
    conc = recompute_concurrency(arrivals, curve.step_s, WatchTime())
    assert abs(max(conc) - peak) <= 0.01 * peak
    # Little's law over the day: what was watched inside it equals mean concurrency × the day
    w = WatchTime()
    mean_watch = sum(survival((k + 0.5) * 10.0, w) * 10.0 for k in range(int(w.runtime_s / 10)))
    assert abs(mean_watch - curve.mean_watch_s) <= 0.01 * mean_watch
    day = len(conc) * curve.step_s
    inside = sum(a * min(mean_watch, _watched_until(day - (j + 0.5) * curve.step_s, w))
                 for j, a in enumerate(arrivals))
    assert abs(sum(conc) * curve.step_s - inside) <= 0.01 * inside
    raw = views / day * mean_watch     # arrival rate × mean watch time; the day's edges lower it
    assert 0.8 * raw <= sum(conc) / len(conc) <= raw


def _watched_until(x: float, w: WatchTime) -> float:
    """E[min(W, x)] by numeric integration of S (10 s steps)."""
    steps = max(int(min(x, w.runtime_s) / 10.0), 0)
    return sum(survival((k + 0.5) * 10.0, w) * 10.0 for k in range(steps))


def test_default_day_is_feasible_and_peaks_in_the_evening() -> None:
    curve = calibrate(1_000_000, 60_000)
    curve.self_check()
    assert abs(curve.peak - 60_000) <= 600
    assert 7 <= curve.peak_hour <= 12       # release at noon: prime time in the evening
    assert curve.amplitude > 0
    law = curve.littles_law()
    assert law["mean_concurrency"] < 60_000 < 2 * law["mean_concurrency"]


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_infeasible_pairs_are_refused_naming_the_range(factor: float) -> None:
    lo, hi = feasible_peak_range(1_000_000)
    peak = lo * factor if factor < 1 else hi * factor
    with pytest.raises(UsageError) as err:
        calibrate(1_000_000, peak)
    text = str(err.value)
    assert "infeasible" in text
    assert f"{lo:,.0f}" in text and f"{hi:,.0f}" in text


def test_sampler_draws_the_scaled_views_with_the_watch_time_mixture() -> None:
    curve = calibrate(1_000_000, 60_000)
    viewers = sample_viewers(curve, WatchTime(), seed=7, scale=0.02, window_h=(0, 24))
    assert abs(len(viewers) - 20_000) <= 1
    assert all(v.offset_s == 0 for v in viewers)
    assert sorted(v.start_s for v in viewers) == [v.start_s for v in viewers]
    finishers = sum(1 for v in viewers if v.watch_s >= WatchTime().runtime_s - 1e-6)
    uncut = [v for v in viewers if v.start_s < 22 * 3600]
    assert abs(finishers / len(viewers) - 0.35) < 0.02
    mean = statistics.fmean(v.watch_s for v in uncut)
    assert abs(mean - curve.mean_watch_s) <= 0.05 * curve.mean_watch_s
    times = [i * 600.0 for i in range(144)]
    sampled = sampled_concurrency(viewers, times)
    expected = [0.02 * curve.concurrency_at(t) for t in times]
    assert abs(max(sampled) - max(expected)) <= 0.06 * max(expected)


def test_a_window_opens_with_the_viewers_already_watching() -> None:
    curve = calibrate(1_000_000, 60_000)
    viewers = sample_viewers(curve, WatchTime(), seed=3, scale=0.01, window_h=(9.0, 9.5))
    carried = [v for v in viewers if v.offset_s > 0]
    assert abs(len(carried) - 0.01 * curve.concurrency_at(9 * 3600)) <= 1
    assert all(0 < v.offset_s < WatchTime().runtime_s for v in carried)
    assert all(v.start_s + v.watch_s <= 1800 + 1e-6 for v in viewers)
    new = [v for v in viewers if v.offset_s == 0]
    expected_new = 0.01 * sum(curve.rate_at(9 * 3600 + s) for s in range(0, 1800, 60)) * 60
    assert abs(len(new) - expected_new) <= 1 + 0.02 * expected_new
    at_start = sampled_concurrency(viewers, [6.0])[0]
    assert abs(at_start - len(carried)) <= 0.02 * len(carried)


def test_sampling_is_deterministic_per_seed() -> None:
    curve = calibrate(100_000, 6_000)
    a = sample_viewers(curve, WatchTime(), seed=5, scale=0.1, window_h=(1, 3))
    b = sample_viewers(curve, WatchTime(), seed=5, scale=0.1, window_h=(1, 3))
    c = sample_viewers(curve, WatchTime(), seed=6, scale=0.1, window_h=(1, 3))
    assert a == b
    assert a != c
