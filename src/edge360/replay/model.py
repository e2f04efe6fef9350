"""The first-day traffic model: arrival curve, watch-time mixture, calibration and viewer sampling.

Pure: no asyncio, network, clock or environment. Time is seconds after the release moment (t = 0),
the day runs over a grid of `step_s` (one minute) bins. Arrivals are piecewise constant per bin,
the watch time W is a mixture of finishers (the whole runtime) and early leavers (a lognormal with
a heavy head, capped at the runtime). Concurrency is arrivals convolved with the survival
S(t) = P(W > t); the convolution uses the bin-averaged survival, exact for arrivals spread
uniformly within a bin.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from edge360.core.errors import UsageError

DAY_S = 86_400.0
_STD_NORMAL = NormalDist()


@dataclass(frozen=True)
class ArrivalShape:
    """Relative arrival-rate shape, hours after release (release at noon puts prime time at 21:00).

    rate(t) ∝ base(t) + surge(t) + amplitude * prime(t); `amplitude` is what calibration solves.
    """

    surge_height: float = 0.8      # surge right after release, relative to the base rate
    surge_decay_h: float = 1.0      # e-folding time of the release surge
    prime_hour: float = 9.0         # centre of the evening prime-time peak
    prime_width_h: float = 1.5      # its standard deviation
    trough_hour: float = 16.5       # centre of the night trough (04:30 for a noon release)
    trough_depth: float = 0.5      # fraction of the base rate missing at the trough's centre
    trough_width_h: float = 2.5
    amplitude_max: float = 60.0     # upper end of the prime-time amplitude search

    def components(self, t_s: float) -> tuple[float, float, float]:
        """(base, surge, prime) relative rates at `t_s`; all non-negative."""
        h = t_s / 3600.0
        base = 1.0 - self.trough_depth * math.exp(
            -0.5 * ((h - self.trough_hour) / self.trough_width_h) ** 2)
        surge = self.surge_height * math.exp(-h / self.surge_decay_h)
        prime = math.exp(-0.5 * ((h - self.prime_hour) / self.prime_width_h) ** 2)
        return base, surge, prime


@dataclass(frozen=True)
class WatchTime:
    """Watch-time mixture: `finish_share` watch the whole runtime, the rest leave early."""

    runtime_s: float = 7200.0
    finish_share: float = 0.35
    leaver_median_s: float = 900.0
    leaver_sigma: float = 1.0

    @property
    def _mu(self) -> float:
        return math.log(self.leaver_median_s)

    def survival(self, t: float) -> float:
        """S(t) = P(W > t)."""
        if t < 0:
            return 1.0
        if t >= self.runtime_s:
            return 0.0
        if t == 0:
            return 1.0
        leaver = 1.0 - _STD_NORMAL.cdf((math.log(t) - self._mu) / self.leaver_sigma)
        return self.finish_share + (1.0 - self.finish_share) * leaver

    def integrated_survival(self, x: float) -> float:
        """G(x) = ∫_0^x S(t) dt = E[min(W, x)] (closed form for the capped lognormal)."""
        y = min(max(x, 0.0), self.runtime_s)
        if y == 0.0:
            return 0.0
        mu, sigma = self._mu, self.leaver_sigma
        z = (math.log(y) - mu) / sigma
        leaver = (math.exp(mu + sigma * sigma / 2) * _STD_NORMAL.cdf(z - sigma)
                  + y * (1.0 - _STD_NORMAL.cdf(z)))
        return self.finish_share * y + (1.0 - self.finish_share) * leaver

    @property
    def mean_s(self) -> float:
        return self.integrated_survival(self.runtime_s)

    def sample(self, rng: random.Random, older_than: float = 0.0) -> float:
        """One watch time W, conditional on W > older_than (a viewer already that far in)."""
        a = max(older_than, 0.0)
        s_a = self.survival(a)
        if s_a <= 0.0:
            return self.runtime_s
        if rng.random() < self.finish_share / s_a:
            return self.runtime_s
        # leaver conditional on X > a: invert the lognormal CDF on (F(a), 1)
        f_a = 0.0 if a == 0 else _STD_NORMAL.cdf((math.log(a) - self._mu) / self.leaver_sigma)
        u = f_a + (1.0 - f_a) * rng.random()
        u = min(max(u, 1e-12), 1.0 - 1e-12)
        x = math.exp(self._mu + self.leaver_sigma * _STD_NORMAL.inv_cdf(u))
        return min(max(x, a), self.runtime_s)


@dataclass(frozen=True)
class Curve:
    """The calibrated day. `times_s[i]` is the start of bin i; `arrival_rate[i]` its arrivals per
    second; `concurrency[i]` the expected viewers watching at `times_s[i]`."""

    step_s: float
    times_s: tuple[float, ...]
    arrival_rate: tuple[float, ...]
    concurrency: tuple[float, ...]
    views: float
    amplitude: float
    mean_watch_s: float
    kernel: tuple[float, ...]   # kernel[k]: mean survival of a bin-j arrival at bin j+k's start

    @property
    def arrivals(self) -> tuple[float, ...]:
        """Expected arrivals per bin."""
        return tuple(r * self.step_s for r in self.arrival_rate)

    @property
    def peak(self) -> float:
        return max(self.concurrency)

    @property
    def peak_hour(self) -> float:
        """Hours after release at which concurrency peaks."""
        i = max(range(len(self.concurrency)), key=self.concurrency.__getitem__)
        return self.times_s[i] / 3600.0

    def rate_at(self, t_s: float) -> float:
        """Arrivals per second in the bin holding `t_s`."""
        i = min(max(int(t_s / self.step_s), 0), len(self.arrival_rate) - 1)
        return self.arrival_rate[i]

    def concurrency_at(self, t_s: float) -> float:
        """Expected concurrency at any time (linear between grid points)."""
        x = t_s / self.step_s
        i = min(max(int(x), 0), len(self.concurrency) - 1)
        if i + 1 >= len(self.concurrency):
            return self.concurrency[i]
        frac = x - i
        return self.concurrency[i] * (1 - frac) + self.concurrency[i + 1] * frac

    def littles_law(self) -> dict[str, float]:
        """Mean concurrency against arrival rate × mean watch time.

        `edge_corrected` is the watch time that falls inside the day (late arrivals are cut at its
        end); it must equal the mean concurrency. `ratio` is the raw Little's-law ratio (< 1 by
        the day's edges: the day starts empty and late arrivals watch past its end)."""
        n = len(self.concurrency)
        span = n * self.step_s
        mean_c = sum(self.concurrency) / n
        raw = self.views / span * self.mean_watch_s
        cum = [0.0]
        for k in self.kernel[1:]:
            cum.append(cum[-1] + k * self.step_s)
        inside = sum(a * cum[min(n - 1 - j, len(cum) - 1)] for j, a in enumerate(self.arrivals))
        return {"mean_concurrency": mean_c, "rate_times_watch": raw,
                "edge_corrected": inside / span, "ratio": mean_c / raw if raw else 0.0}

    def self_check(self) -> None:
        """Raise AssertionError when the curve contradicts Little's law or its own views."""
        law = self.littles_law()
        assert abs(law["mean_concurrency"] - law["edge_corrected"]) <= 1e-6 * max(
            law["edge_corrected"], 1.0), law
        assert 0.7 <= law["ratio"] <= 1.0 + 1e-9, law
        assert abs(sum(self.arrivals) - self.views) <= 1e-6 * max(self.views, 1.0)


def _kernel(watch: WatchTime, step_s: float) -> list[float]:
    """kernel[k] = (G(k·dt) − G((k−1)·dt)) / dt for k ≥ 1; kernel[0] = 0 (arrivals count after)."""
    n = math.ceil(watch.runtime_s / step_s) + 1
    g = [watch.integrated_survival(k * step_s) for k in range(n + 1)]
    return [0.0] + [(g[k] - g[k - 1]) / step_s for k in range(1, n + 1)]


def _convolve(per_bin: list[float], kernel: list[float]) -> list[float]:
    n = len(per_bin)
    out = [0.0] * n
    for j, a in enumerate(per_bin):
        if a == 0.0:
            continue
        for k in range(1, min(len(kernel), n - j)):
            out[j + k] += a * kernel[k]
    return out


@dataclass(frozen=True)
class _Parts:
    """The three shape components' per-bin mass and concurrency, for views = 1 mass unit each."""

    mass: tuple[list[float], list[float], list[float]]
    conc: tuple[list[float], list[float], list[float]]
    totals: tuple[float, float, float]
    kernel: list[float]

    def peak_ratio(self, amp: float) -> float:
        """Peak concurrency per view for prime-time amplitude `amp`."""
        (cb, cs, cp), (tb, ts, tp) = self.conc, self.totals
        norm = tb + ts + amp * tp
        return max(b + s + amp * p for b, s, p in zip(cb, cs, cp, strict=True)) / norm


def _parts(shape: ArrivalShape, watch: WatchTime, step_s: float, day_s: float) -> _Parts:
    n = round(day_s / step_s)
    comps = [shape.components((i + 0.5) * step_s) for i in range(n)]
    kernel = _kernel(watch, step_s)
    mass = tuple([c[m] * step_s for c in comps] for m in range(3))
    conc = tuple(_convolve(m, kernel) for m in mass)
    return _Parts(mass=(mass[0], mass[1], mass[2]), conc=(conc[0], conc[1], conc[2]),
                  totals=(sum(mass[0]), sum(mass[1]), sum(mass[2])), kernel=kernel)


def _search_bounds(parts: _Parts, amp_max: float) -> tuple[float, float, float]:
    """(amplitude of the lowest peak, lowest peak ratio, highest peak ratio).

    The peak is not monotonic in the amplitude (a larger prime time first lowers the surge's share),
    so the search runs on the increasing branch that starts at the minimum."""
    grid = [amp_max * (i / 200) ** 2 for i in range(201)]
    ratios = [parts.peak_ratio(a) for a in grid]
    i_min = min(range(len(grid)), key=ratios.__getitem__)
    return grid[i_min], ratios[i_min], ratios[-1]


def feasible_peak_range(views: float, *, shape: ArrivalShape = ArrivalShape(),
                        watch: WatchTime = WatchTime(), step_s: float = 60.0,
                        day_s: float = DAY_S) -> tuple[float, float]:
    """The lowest and highest concurrency peak this shape family can make with `views` arrivals."""
    parts = _parts(shape, watch, step_s, day_s)
    _, lo, hi = _search_bounds(parts, shape.amplitude_max)
    return lo * views, hi * views


def calibrate(views: float, peak: float, *, shape: ArrivalShape = ArrivalShape(),
              watch: WatchTime = WatchTime(), step_s: float = 60.0,
              day_s: float = DAY_S) -> Curve:
    """The day whose arrivals total `views` exactly and whose concurrency peaks at `peak`.

    The prime-time amplitude is found by bisection; an infeasible pair raises UsageError naming the
    feasible peak range for those views."""
    if views <= 0 or peak <= 0:
        raise UsageError(f"views and peak must be positive (got views={views:g}, peak={peak:g})")
    parts = _parts(shape, watch, step_s, day_s)
    a_lo, r_lo, r_hi = _search_bounds(parts, shape.amplitude_max)
    target = peak / views
    if not r_lo * 0.995 <= target <= r_hi * 1.005:
        raise UsageError(
            f"peak {peak:,.0f} is infeasible for {views:,.0f} views: this model makes peaks from "
            f"{r_lo * views:,.0f} to {r_hi * views:,.0f} for those views")
    lo, hi = a_lo, shape.amplitude_max
    for _ in range(80):
        mid = (lo + hi) / 2
        if parts.peak_ratio(mid) < target:
            lo = mid
        else:
            hi = mid
    amp = min(max((lo + hi) / 2, a_lo), shape.amplitude_max)
    (mb, ms, mp), (cb, cs, cp) = parts.mass, parts.conc
    norm = views / (parts.totals[0] + parts.totals[1] + amp * parts.totals[2])
    arrivals = [norm * (b + s + amp * p) for b, s, p in zip(mb, ms, mp, strict=True)]
    conc = [norm * (b + s + amp * p) for b, s, p in zip(cb, cs, cp, strict=True)]
    n = len(arrivals)
    return Curve(step_s=step_s, times_s=tuple(i * step_s for i in range(n)),
                 arrival_rate=tuple(a / step_s for a in arrivals), concurrency=tuple(conc),
                 views=float(views), amplitude=amp, mean_watch_s=watch.mean_s,
                 kernel=tuple(parts.kernel))


@dataclass(frozen=True)
class Viewer:
    """One simulated viewer, in simulated seconds relative to the window start."""

    index: int
    start_s: float     # when it opens the master playlist (0 for viewers already watching)
    watch_s: float     # how long it keeps watching from start_s (cut at the window end)
    offset_s: float    # how far into the film it is at start_s (0 for a new arrival)


def sample_viewers(curve: Curve, watch: WatchTime, *, seed: int, scale: float,
                   window_h: tuple[float, float], phase_s: float = 6.0) -> list[Viewer]:
    """Draw the viewers of a window: new arrivals from the curve (count = round(scale × expected))
    plus the viewers already watching at its start, each part-way through the film.

    A viewer already watching makes its first request of the window at a random phase within
    `phase_s` (one segment duration), as mid-stream players do, rather than all at the window's
    first instant. Deterministic for a seed, so every worker and shard draws the same list."""
    rng = random.Random(seed)
    w0, w1 = window_h[0] * 3600.0, window_h[1] * 3600.0
    span = w1 - w0
    dt = curve.step_s
    arrivals = curve.arrivals
    drawn: list[tuple[float, float, float]] = []
    # new arrivals: bins overlapping the window, weighted by their overlapping mass
    bins: list[tuple[float, float]] = []
    weights: list[float] = []
    for j, a in enumerate(arrivals):
        lo, hi = max(j * dt, w0), min((j + 1) * dt, w1)
        if hi > lo and a > 0:
            bins.append((lo, hi))
            weights.append(a * (hi - lo) / dt)
    count = round(scale * sum(weights))
    if count and weights:
        cum = _cumulative(weights)
        for _ in range(count):
            lo, hi = bins[bisect.bisect_left(cum, rng.random() * cum[-1])]
            t = lo + (hi - lo) * rng.random()
            drawn.append((t - w0, min(watch.sample(rng), w1 - t), 0.0))
    # viewers already watching at the window start: arrival bins before it, weighted by survival
    carried = round(scale * curve.concurrency_at(w0)) if w0 > 0 else 0
    if carried:
        i0 = w0 / dt
        cbins: list[int] = []
        cweights: list[float] = []
        for j, a in enumerate(arrivals):
            if (j + 1) * dt > w0:
                break
            age_bins = i0 - j - 0.5
            s = watch.survival(age_bins * dt)
            if s > 0 and a > 0:
                cbins.append(j)
                cweights.append(a * s)
        if cweights:
            cum = _cumulative(cweights)
            for _ in range(carried):
                j = cbins[bisect.bisect_left(cum, rng.random() * cum[-1])]
                age = w0 - (j + rng.random()) * dt
                total = watch.sample(rng, older_than=age)
                phase = min(phase_s * rng.random(), span)
                drawn.append((phase, min(max(total - age - phase, 0.0), span - phase),
                              age + phase))
    drawn.sort()
    return [Viewer(index=i, start_s=s, watch_s=w, offset_s=o) for i, (s, w, o) in enumerate(drawn)]


def _cumulative(weights: list[float]) -> list[float]:
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def sampled_concurrency(viewers: list[Viewer], times_s: list[float]) -> list[int]:
    """How many sampled viewers are watching at each time (seconds from the window start).

    A viewer watches over the closed interval [start, start + watch]: one whose watch time was cut
    at the window's end is still watching at that instant (the day does not empty at its end)."""
    starts = sorted(v.start_s for v in viewers)
    ends = sorted(v.start_s + v.watch_s for v in viewers)
    return [bisect.bisect_right(starts, t) - bisect.bisect_left(ends, t) for t in times_s]
