"""Per-key limiters with bounded memory: a token bucket for request rates and a window counter for
events such as sessions opened per address per minute.

Both keep at most `max_keys` keys and drop the least recently seen first. A dropped key that comes
back starts afresh (a full bucket, an empty window): that is the price of a bound on memory, and
it only favours a key idle long enough to fall behind `max_keys` busier ones. Time is the `now`
argument (any monotonic seconds); a clock that steps back counts as no time passing.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class TokenBucketLimiter:
    """`rate` tokens a second per key, up to `burst` saved; each allowed request spends one.

    rate 0 turns the limiter off. burst <= 0 means "equal to the rate" (the config's default), and a
    bucket always holds at least one token so that a rate below 1/s still lets requests through.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if not (math.isfinite(rate) and math.isfinite(burst)) or rate < 0:
            raise ValueError("rate and burst must be finite and rate non-negative")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = float(rate)
        self.burst = max(float(burst) if burst > 0 else self.rate, 1.0)
        self.max_keys = max_keys
        # key -> (tokens, time of the last check); order = least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, now: float) -> float:
        """0.0 if allowed (a token spent), else seconds until a token is there (Retry-After)."""
        if self.rate == 0:
            return 0.0
        state = self._buckets.pop(key, None)
        if state is None:
            tokens, last = self.burst, now
        else:
            tokens, last = state
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            last = max(last, now)  # a clock stepping back must not earn the same seconds twice
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            # measured from the latest time seen, which a clock that stepped back has not reached
            wait = (1.0 - tokens) / self.rate + (last - now)
        self._buckets[key] = (tokens, last)  # re-inserted at the most recently seen end
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class WindowCounter:
    """At most `limit` events per key in each window of `window` seconds.

    A key's window opens at its first event after the previous window ended, so the windows of one
    key are disjoint and each admits `limit` events; any sliding interval of `window` seconds
    therefore admits at most 2 x `limit`. This costs two numbers per key where an exact sliding
    log would keep `limit` timestamps. limit 0 turns the counter off.
    """

    __slots__ = ("_windows", "limit", "max_keys", "window")

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        if limit < 0 or not window > 0:
            raise ValueError("limit must be >= 0 and window > 0")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.limit = limit
        self.window = float(window)
        self.max_keys = max_keys
        # key -> (start of the current window, events admitted in it)
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def allow(self, key: str, now: float) -> bool:
        """Count one event for `key` at `now` if its window has room; whether it was admitted."""
        if self.limit == 0:
            return True
        state = self._windows.pop(key, None)
        if state is None or now >= state[0] + self.window:
            start, count = now, 0
        else:
            start, count = state
        allowed = count < self.limit
        self._windows[key] = (start, count + 1 if allowed else count)
        if len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return allowed
