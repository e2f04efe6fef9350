"""Parent health from real traffic: which parents the edge asks first.

Any HTTP server can be a parent (another edge360, nginx, an S3-style store, python's http.server),
and most have no health endpoint, so health is what the edge's own exchanges show: `down_after`
consecutive failures (a connect error, a timeout, a 5xx) mark a parent down, and any answer marks
it up again. A 503 with Retry-After is a parent shedding load (RFC 9110 §15.6.4, §10.2.3), alive
and answering: it never counts as a failure. A parent that is down is asked last; once every
`retry_every` seconds one request whose key it owns goes to it first as a trial (retried on the
next parent if it fails), so it comes back as soon as it works. The optional active probe
(`edge.health_path`, `edge.health_statuses`) reports into the same state.

Pure: `now` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def is_failure(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an answer shows a broken parent: a 5xx, except a 503 with Retry-After."""
    if status < 500:
        return False
    return not (status == 503 and "Retry-After" in headers)


class ParentHealth:
    """Up/down per parent from exchanges and probes, and the order to ask them in."""

    __slots__ = ("_fails", "_retry_at", "down_after", "retry_every", "up")

    def __init__(self, parents: Sequence[str], *, down_after: int, retry_every: float) -> None:
        self.down_after = down_after
        self.retry_every = retry_every
        self.up: dict[str, bool] = dict.fromkeys(parents, True)
        self._fails: dict[str, int] = dict.fromkeys(parents, 0)
        self._retry_at: dict[str, float] = {}

    def set_parents(self, parents: Sequence[str]) -> None:
        """New parents (SIGHUP); known ones keep their state."""
        self.up = {p: self.up.get(p, True) for p in parents}
        self._fails = {p: self._fails.get(p, 0) for p in parents}
        self._retry_at = {p: t for p, t in self._retry_at.items() if p in self.up}

    def succeeded(self, parent: str) -> None:
        """The parent answered: it is up."""
        if parent in self.up:
            self.up[parent] = True
            self._fails[parent] = 0

    def failed(self, parent: str, now: float) -> None:
        """An exchange with the parent failed; the `down_after`-th in a row marks it down."""
        if parent not in self.up:
            return
        n = self._fails[parent] = self._fails[parent] + 1
        if n >= self.down_after and self.up[parent]:
            self.up[parent] = False
            self._retry_at[parent] = now + self.retry_every

    def probed(self, parent: str, ok: bool, now: float) -> None:
        """The active probe's verdict, which the operator asked for: it decides at once."""
        if ok:
            self.succeeded(parent)
        elif parent in self.up:
            self._fails[parent] = max(self._fails[parent], self.down_after)
            if self.up[parent]:
                self.up[parent] = False
                self._retry_at[parent] = now + self.retry_every

    def order(self, ranked: Sequence[str], now: float) -> list[str]:
        """`ranked` (the key's parents, heaviest first) with the healthy ones first; a down parent
        that owns the key goes first when its trial is due (one trial per `retry_every`)."""
        up = self.up
        healthy = [p for p in ranked if up.get(p, True)]
        if len(healthy) == len(ranked):
            return list(ranked)
        down = [p for p in ranked if not up.get(p, True)]
        owner = ranked[0]
        if not up.get(owner, True) and now >= self._retry_at.get(owner, 0.0):
            self._retry_at[owner] = now + self.retry_every
            return [owner, *healthy, *[p for p in down if p != owner]]
        return healthy + down
