"""Counters a scrape can rate: a counter's new label set is shown at 0 for its first seconds.

Prometheus computes rate() and increase() from the samples it holds, so a series whose first
sample already carries its first increment never shows that increment: one view on a fresh edge
would read as no view at all. So a label set a scraper has not been shown before is exported at 0
for HOLD seconds after the node first reported it (its birth) and at its value from then on; a
scraper that scrapes at least every HOLD seconds sees a 0 first, and rate() counts the whole
increment. The label sets present when the node is first read are born at the node's start, so a
node watched late does not replay its history as a burst.

Births are node-wide: with `--workers N` the hub keeps them and ships the young ones with every
snapshot (`young`/`from_young`), so every worker holds a label set alike. Bounded: at most LIMIT
births are kept; past it, new label sets are shown at once.

Pure: `now` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

#: seconds a new label set is shown at 0: one scrape at Prometheus's default 15 s interval
HOLD = 15.0
LIMIT = 100_000

K = TypeVar("K")
V = TypeVar("V", int, float)

Label = tuple[str, ...]


def _label(key: object) -> Label:
    if isinstance(key, tuple | list):
        return tuple(str(k) for k in key)
    return (str(key),)


class Debuts:
    """Births of counter label sets, and the values a series-storing scraper is shown."""

    __slots__ = ("_born", "_looked", "_start", "hold")

    def __init__(self, start: float, hold: float = HOLD) -> None:
        self._start = start
        self.hold = hold
        self._born: dict[tuple[str, Label], float] = {}
        self._looked = False

    def observe(self, families: Mapping[str, Mapping[Any, Any]], now: float) -> None:
        """Record the birth of every label set not seen before (the first look: the start)."""
        born = self._born
        at = now if self._looked else self._start
        self._looked = True
        for name, values in families.items():
            for key in values:
                ident = (name, _label(key))
                if ident not in born and len(born) < LIMIT:
                    born[ident] = at

    def held(self, name: str, values: Mapping[K, V], now: float) -> dict[K, V]:
        """`values` as a storing scraper sees them: label sets younger than `hold` at 0."""
        born = self._born
        cutoff = now - self.hold
        out: dict[K, V] = {}
        for key, value in values.items():
            birth = born.get((name, _label(key)))
            out[key] = value * 0 if birth is not None and birth > cutoff else value
        return out

    def young(self, now: float) -> list[list[Any]]:
        """The births still inside the hold, as JSON-able rows (for the workers)."""
        cutoff = now - self.hold
        return [[name, list(label), at] for (name, label), at in self._born.items()
                if at > cutoff]

    @classmethod
    def from_young(cls, rows: list[list[Any]], hold: float = HOLD) -> Debuts:
        """A worker's copy of the hub's young births (it observes nothing itself)."""
        d = cls(0.0, hold)
        d._looked = True
        for name, label, at in rows:
            d._born[(str(name), tuple(str(x) for x in label))] = float(at)
        return d
