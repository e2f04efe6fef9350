"""What the edge remembers per stored version so that a hit costs little: the decoded head, the
moment it stops being fresh for a plain request, and the header blocks of its answers.

A stored version is one `meta` bytes object (a new body or a revalidation stores a new one), so
everything here is keyed by that object and can never outlive it. The freshness shortcut is
exact: for a request without Cache-Control or Pragma whose Vary fields select the version, and a
stored response without no-cache, core.policy.decide answers FRESH exactly while
`current_age(now) < freshness_lifetime`, i.e. while `now` is before
`response_time + freshness_lifetime - initial_age` (RFC 9111 §4.2); every other request still
goes through decide.
"""

from __future__ import annotations

from typing import Final

from edge360.core.cachecontrol import vary_fields, vary_key
from edge360.core.lru import Memo
from edge360.edge.stored import StoredObject
from edge360.http.represent import Prepared

#: margin before the freshness deadline from which decide is asked again (float rounding)
_MARGIN: Final = 1e-3
#: Vary selections remembered per version
_MAX_VARY: Final = 64
#: stored versions remembered, and answer header blocks (by version, result, age)
MAX_HELD: Final = 16_384
MAX_BLOCKS: Final = 16_384


class Held:
    """One stored version as the hit path reads it."""

    __slots__ = ("fresh_until", "meta", "obj", "vary", "vary_ok")

    def __init__(self, meta: bytes, obj: StoredObject) -> None:
        s = obj.stored
        self.meta, self.obj = meta, obj
        left = s.freshness_lifetime - s.initial_age
        usable = left > 0 and not s.directives.has("no-cache")
        self.fresh_until = s.response_time + left - _MARGIN if usable else float("-inf")
        names = vary_fields(s.fields.get("vary"))
        # None: Vary * (never selects); () selects any request when the key is ""
        self.vary: tuple[str, ...] | None = names
        if names == () and s.vary_key != "":
            self.fresh_until = float("-inf")
        self.vary_ok: dict[tuple[str | None, ...], bool] = {}

    def fresh_for(self, fields: dict[str, str], now: float) -> bool:
        """Whether decide would answer FRESH (see the module docstring); False: ask decide."""
        if not (now < self.fresh_until and "cache-control" not in fields
                and "pragma" not in fields):
            return False
        names = self.vary
        if not names:
            return names is not None
        values = tuple(fields.get(n) for n in names)
        ok = self.vary_ok.get(values)
        if ok is None:
            if len(self.vary_ok) >= _MAX_VARY:
                self.vary_ok.clear()
            s = self.obj.stored
            ok = vary_key(s.fields.get("vary"), fields) == s.vary_key
            self.vary_ok[values] = ok
        return ok


class HitCache:
    """Held versions by their meta, and the Prepared header block of an answer by (version,
    answer kind, age in whole seconds): a version answered many times a second is encoded
    once a second."""

    def __init__(self) -> None:
        self._held: Memo[int, Held | bytes] = Memo(MAX_HELD)
        self._blocks: Memo[tuple[int, str, int], tuple[bytes, Prepared]] = Memo(MAX_BLOCKS)

    def held(self, meta: bytes) -> Held | None:
        """The version stored as `meta`; None for a record this version cannot read."""
        found = self._held.get(id(meta))
        if isinstance(found, Held):
            if found.meta is meta:
                return found
        elif found is meta:
            return None  # undecodable, remembered as such
        obj = StoredObject.decode(meta)
        if obj is None:
            self._held.put(id(meta), meta)  # holding meta keeps its id from being reused
            return None
        held = Held(meta, obj)
        self._held.put(id(meta), held)
        return held

    def prepared(self, meta: bytes, kind: str, age: int,
                 headers: dict[str, str] | None = None) -> Prepared | None:
        """The block remembered for (version, kind, age), else (with `headers`) the one made now
        and remembered."""
        key = (id(meta), kind, age)
        found = self._blocks.get(key)
        if found is not None and found[0] is meta:
            return found[1]
        if headers is None:
            return None
        prepared = Prepared(headers)
        self._blocks.put(key, (meta, prepared))
        return prepared
