"""The edge's shared-cache policy as pure decisions (RFC 9111, RFC 5861, RFC 9213): what may be
stored, how long it stays fresh, how old it is, whether a request may be served from it, how to
revalidate it, how Vary selects it and what an unsafe request invalidates.

The I/O shell matches on the returned values. Times are wall-clock seconds since the epoch passed
in as `now`; headers are `Mapping[str, str]` with lower-cased names and repeated fields
comma-joined. The request headers given here are the client's (never the peer token the edge adds
upstream), since Authorization and Vary are about the client's request.

Choices where the RFCs leave room:
- Qualified no-cache="f" counts as no-cache (revalidate each use), qualified private="f" as
  private (not stored): readings §5.2.2.4/§5.2.2.7 allow, and the safe ones.
- Request no-cache / max-age / Pragma: no-cache are honoured (`honor_request_no_cache`; a shared
  cache MAY ignore them); a fresh `immutable` response (RFC 8246) ignores them.
- `default_ttl` (the edge's per-kind TTL) applies only when the upstream gave no explicit
  freshness, the status is heuristically cacheable and there is no Last-Modified for the 10%
  heuristic. Pass None for non-HLS content so plain HTTP stays RFC-exact.
- Stale is served only with permission: the response's or request's stale-while-revalidate /
  stale-if-error / max-stale, or the edge's default window when the upstream is silent (pass 0 to
  disable). must-revalidate, proxy-revalidate and no-cache always forbid it; s-maxage (implied
  proxy-revalidate, §5.2.2.10) forbids only the defaults, not an explicit RFC 5861 directive
  beside it (CDNs honour `s-maxage=1, stale-while-revalidate=59`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge360.core.cachecontrol import (
    Directives,
    age_value,
    cache_directives,
    date_value,
    expires_value,
    last_modified_value,
    request_directives,
    vary_key,
)
from edge360.core.conditional import http_date
from edge360.core.storedfields import merge_304, stored_fields

#: RFC 9110 §15.1: statuses cacheable by default, i.e. heuristically (RFC 9111 §4.2.2).
HEURISTIC_STATUSES: Final = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Final statuses defined by RFC 9110 whose caching rules this cache follows (§5.2.2.3).
UNDERSTOOD_STATUSES: Final = frozenset(
    [*range(200, 207), 300, 301, 302, 303, 304, 305, 307, 308, *range(400, 418), 421, 422, 426,
     *range(500, 506)])
#: RFC 5861 §4: the statuses stale-if-error covers.
ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
DEFAULT_HEURISTIC_CAP: Final = 86400.0
#: §4.2.2: "no more than some fraction of the interval since" Last-Modified; 10% is typical.
HEURISTIC_FRACTION: Final = 0.1


def not_storable_reason(method: str, status: int, request_headers: Mapping[str, str],
                        response_headers: Mapping[str, str]) -> str | None:
    """Why a response may not be stored by this shared cache (RFC 9111 §3), or None if it may."""
    if method.upper() != "GET":
        return "method"  # HEAD answers may update a stored GET (§4.3.5) but never create one
    if status < 200:
        return "non-final status"
    if status == 304:
        return "304 only updates a stored response"
    if request_directives(request_headers).has("no-store"):
        return "request no-store"  # §5.2.1.5
    d = cache_directives(response_headers)
    if d.has("must-understand"):
        # §5.2.2.3: store only if the status is understood, and then no-store is ignored.
        if status not in UNDERSTOOD_STATUSES:
            return "must-understand with a status not understood"
    elif d.has("no-store"):
        return "no-store"
    if d.has("private"):
        return "private"  # §5.2.2.7, qualified or not (see the module docstring)
    if "authorization" in request_headers and not (
            d.has("public") or d.has("s-maxage") or d.has("must-revalidate")):
        return "authorization"  # §3.5
    if vary_key(response_headers.get("vary"), {}) is None:
        return "vary *"  # §4.1: a Vary of * never matches, so storing it is pointless
    if not (has_explicit_expiration(d, response_headers) or d.has("public")
            or status in HEURISTIC_STATUSES):
        return "no explicit freshness and not heuristically cacheable"
    return None


def storable(method: str, status: int, request_headers: Mapping[str, str],
             response_headers: Mapping[str, str]) -> bool:
    """Whether this shared cache may store the response (RFC 9111 §3)."""
    return not_storable_reason(method, status, request_headers, response_headers) is None


def has_explicit_expiration(d: Directives, headers: Mapping[str, str]) -> bool:
    """Whether the upstream set freshness itself: s-maxage, max-age (even invalid), or Expires
    (ignored when a targeted field rules, RFC 9213 §2.2)."""
    return d.has("s-maxage") or d.has("max-age") or (not d.targeted and "expires" in headers)


def freshness_lifetime(status: int, headers: Mapping[str, str], *, response_time: float,
                       default_ttl: float | None = None,
                       heuristic_cap: float = DEFAULT_HEURISTIC_CAP) -> float:
    """Seconds the response is fresh for this shared cache (RFC 9111 §4.2.1), never negative.

    s-maxage, else max-age (from the ruling targeted field or Cache-Control), else Expires - Date
    (not when a targeted field rules); an invalid value of the first present means 0 (stale).
    Without any: 10% of Date - Last-Modified capped at `heuristic_cap` if heuristics are allowed
    (§4.2.2), else `default_ttl`, else 0.
    """
    d = cache_directives(headers)
    for name in ("s-maxage", "max-age"):  # §4.2.1: s-maxage first in a shared cache
        if d.has(name):
            return float(d.delta(name) or 0)
    date = date_value(headers)
    if date is None:
        date = response_time  # RFC 9110 §6.6.1: the receipt time stands in for a missing Date
    if not d.targeted:
        expires = expires_value(headers)
        if expires is not None:
            return max(0.0, expires - date)
    if not (d.has("public") or status in HEURISTIC_STATUSES):
        return 0.0
    last_modified = last_modified_value(headers)
    if last_modified is not None:
        return min(max(0.0, (date - last_modified) * HEURISTIC_FRACTION), max(0.0, heuristic_cap))
    return max(0.0, default_ttl) if default_ttl is not None else 0.0


def corrected_initial_age(headers: Mapping[str, str], request_time: float,
                          response_time: float) -> float:
    """RFC 9111 §4.2.3: max(apparent_age, corrected_age_value) at the moment of receipt."""
    date = date_value(headers)
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value(headers) + response_delay
    return max(apparent_age, corrected_age_value)


_Facts = tuple[dict[str, str], Directives, float | None, float, float]


@dataclass(frozen=True)
class StoredResponse:
    """What the edge keeps per stored object besides the body: immutable, JSON-able via to_dict.

    `headers` are the stored fields as (lower-cased name, value) pairs; `vary_key` is the
    secondary key of the request that fetched it; `default_ttl`/`heuristic_cap` record the
    freshness policy that applied when it was stored.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    request_time: float
    response_time: float
    vary_key: str = ""
    default_ttl: float | None = None
    heuristic_cap: float = DEFAULT_HEURISTIC_CAP
    #: fields, directives, Last-Modified, freshness lifetime and initial age, worked out once on
    #: first use (functools.cached_property caches nothing in a compiled class: no __dict__)
    _facts: _Facts | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_response(cls, status: int, headers: Mapping[str, str], *, request_time: float,
                      response_time: float, request_headers: Mapping[str, str],
                      default_ttl: float | None = None,
                      heuristic_cap: float = DEFAULT_HEURISTIC_CAP) -> StoredResponse:
        """The entry for a response just received; hop-by-hop fields are dropped (§3.1)."""
        key = vary_key(headers.get("vary"), request_headers)
        return cls(status, tuple(stored_fields(headers).items()), request_time, response_time,
                   key or "", default_ttl, heuristic_cap)

    def facts(self) -> _Facts:
        try:
            facts = self._facts
        except AttributeError:  # compiled, the dataclass leaves an init=False field unset
            facts = None
        if facts is None:
            f = dict(self.headers)
            facts = (f, cache_directives(f), last_modified_value(f),
                     freshness_lifetime(self.status, f, response_time=self.response_time,
                                        default_ttl=self.default_ttl,
                                        heuristic_cap=self.heuristic_cap),
                     corrected_initial_age(f, self.request_time, self.response_time))
            object.__setattr__(self, "_facts", facts)  # frozen: set once, never changed
        return facts

    @property
    def fields(self) -> dict[str, str]:
        return self.facts()[0]

    @property
    def directives(self) -> Directives:
        return self.facts()[1]

    @property
    def etag(self) -> str | None:
        return self.fields.get("etag")

    @property
    def last_modified(self) -> float | None:
        return self.facts()[2]

    @property
    def freshness_lifetime(self) -> float:
        return self.facts()[3]

    @property
    def initial_age(self) -> float:
        return self.facts()[4]

    def current_age(self, now: float) -> float:
        """§4.2.3: corrected_initial_age + resident_time (never negative if the clock steps)."""
        return self.initial_age + max(0.0, now - self.response_time)

    def age(self, now: float) -> int:
        """The Age to send: current age in whole seconds, capped at 2^31 (§5.1, §1.2.2)."""
        return min(int(self.current_age(now)), 2**31)

    def age_header(self, now: float) -> str:
        return str(self.age(now))

    def is_fresh(self, now: float) -> bool:
        return self.freshness_lifetime > self.current_age(now)  # §4.2

    def staleness(self, now: float) -> float:
        """Seconds past the freshness lifetime (negative while fresh)."""
        return self.current_age(now) - self.freshness_lifetime

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "headers": [list(p) for p in self.headers],
                "request_time": self.request_time, "response_time": self.response_time,
                "vary_key": self.vary_key, "default_ttl": self.default_ttl,
                "heuristic_cap": self.heuristic_cap}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredResponse:
        """Inverse of to_dict; raises ValueError on a malformed record (a damaged disk entry)."""
        try:
            headers = tuple((str(k), str(v)) for k, v in data["headers"])
            ttl = data.get("default_ttl")
            entry = cls(int(data["status"]), headers, float(data["request_time"]),
                        float(data["response_time"]), str(data.get("vary_key", "")),
                        None if ttl is None else float(ttl),
                        float(data.get("heuristic_cap", DEFAULT_HEURISTIC_CAP)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed stored response: {e}") from None
        return entry


class Action(enum.Enum):
    """What the edge does with a request given what it has stored."""

    FRESH = "fresh"  # serve the stored response
    STALE_REVALIDATE_BACKGROUND = "stale_revalidate_background"  # serve stale, refresh behind
    STALE = "stale"  # serve stale: the client accepted it (max-stale)
    REVALIDATE = "revalidate"  # send conditional_headers(entry) upstream first
    MISS = "miss"  # nothing usable stored: fetch
    GATEWAY_TIMEOUT = "gateway_timeout"  # only-if-cached and nothing usable: answer 504


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: the Age header value for a response served from the entry (0 when none)
    age: int = 0
    reason: str = ""


def _unusable(req: Directives, action: Action, age: int, reason: str) -> Decision:
    if req.has("only-if-cached"):  # §5.2.1.7: a stored response or 504, never a fetch
        return Decision(Action.GATEWAY_TIMEOUT, 0, f"only-if-cached: {reason}")
    return Decision(action, age, reason)


def _forbids_stale(d: Directives) -> bool:
    """§4.2.4: these directives forbid serving the response stale without validation."""
    return d.has("no-cache") or d.has("must-revalidate") or d.has("proxy-revalidate")


def swr_window(d: Directives, default: float, maximum: float) -> float:
    """Seconds of staleness stale-while-revalidate allows (RFC 5861 §3), capped at `maximum`;
    `default` applies only when the upstream is silent and sent no s-maxage (§5.2.2.10)."""
    if _forbids_stale(d):
        return 0.0
    if d.has("stale-while-revalidate"):
        return min(float(d.delta("stale-while-revalidate") or 0), maximum)  # invalid -> 0
    if d.has("s-maxage"):
        return 0.0
    return max(0.0, min(default, maximum))


def decide(entry: StoredResponse | None, request_headers: Mapping[str, str], now: float, *,
           stale_while_revalidate_max: float, stale_while_revalidate_default: float = 0.0,
           honor_request_no_cache: bool = True) -> Decision:
    """Whether and how a request may be answered from `entry` (RFC 9111 §4, RFC 5861 §3)."""
    req = request_directives(request_headers)
    if entry is None:
        return _unusable(req, Action.MISS, 0, "not stored")
    if vary_key(entry.fields.get("vary"), request_headers) != entry.vary_key:
        return _unusable(req, Action.MISS, 0, "vary mismatch")  # §4.1
    d = entry.directives
    age, lifetime = entry.current_age(now), entry.freshness_lifetime
    fresh = lifetime > age
    shown = entry.age(now)
    # §5.2.1: the client's reload directives. RFC 8246: a fresh immutable response needs none.
    if honor_request_no_cache and not (fresh and d.has("immutable")):
        if req.has("no-cache"):
            return _unusable(req, Action.REVALIDATE, shown, "request no-cache")
        max_age = req.delta("max-age")
        if max_age is not None and age > max_age:
            return _unusable(req, Action.REVALIDATE, shown, "request max-age")
    min_fresh = req.delta("min-fresh")
    if min_fresh is not None and lifetime - age < min_fresh:
        return _unusable(req, Action.REVALIDATE, shown, "request min-fresh")  # §5.2.1.3
    if d.has("no-cache"):
        return _unusable(req, Action.REVALIDATE, shown, "no-cache")  # §5.2.2.4
    if fresh:
        return Decision(Action.FRESH, shown, "fresh")
    staleness = age - lifetime
    max_stale = req.delta("max-stale")
    if (max_stale is not None and staleness <= max_stale and not _forbids_stale(d)
            and not d.has("s-maxage")):
        return Decision(Action.STALE, shown, "request max-stale")  # §5.2.1.2
    window = swr_window(d, stale_while_revalidate_default, stale_while_revalidate_max)
    if window > 0 and staleness <= window:
        return Decision(Action.STALE_REVALIDATE_BACKGROUND, shown, "stale-while-revalidate")
    return _unusable(req, Action.REVALIDATE, shown, "stale")


def can_serve_stale_on_error(entry: StoredResponse, now: float, error: int | BaseException,
                             stale_if_error_max: float, *,
                             request_headers: Mapping[str, str] | None = None,
                             stale_if_error_default: float | None = None) -> bool:
    """Whether the stored response may answer after the upstream failed (RFC 5861 §4).

    `error` is the upstream status (only 500/502/503/504 count) or the exception it raised. The
    window is the largest of the response's and the request's stale-if-error (and the request's
    max-stale), or `stale_if_error_default` (default: `stale_if_error_max`) when all are silent;
    always capped at `stale_if_error_max`.
    """
    if isinstance(error, int) and error not in ERROR_STATUSES:
        return False
    d = entry.directives
    if d.has("no-cache"):
        return False  # it may never be used unvalidated (§5.2.2.4)
    staleness = entry.staleness(now)
    if staleness < 0:
        return True
    if d.has("must-revalidate") or d.has("proxy-revalidate"):
        return False  # §4.2.4
    req = request_directives(request_headers or {})
    allowed = [float(req.delta(n) or 0) for n in ("stale-if-error", "max-stale") if req.has(n)]
    if d.has("stale-if-error"):
        allowed.append(float(d.delta("stale-if-error") or 0))  # invalid -> 0
    elif d.has("s-maxage"):
        return False  # §5.2.2.10: implied proxy-revalidate, overridden only by the upstream's own
    if not allowed:
        allowed.append(stale_if_error_max if stale_if_error_default is None
                       else stale_if_error_default)
    window = min(max(allowed), stale_if_error_max)
    return window > 0 and staleness <= window


def revalidated(entry: StoredResponse, response_headers: Mapping[str, str], *,
                request_time: float, response_time: float) -> StoredResponse:
    """The entry freshened by a 304 (or a matching HEAD): headers merged per §3.2 and timed by the
    new exchange. A stored Age or Date the answer lacks would describe the old exchange, so the
    Age is dropped and the Date becomes the receipt time (RFC 9110 §6.6.1)."""
    merged = merge_304(entry.fields, response_headers)
    if "age" not in response_headers:
        merged.pop("age", None)
    if date_value(response_headers) is None:
        merged["date"] = http_date(response_time)
    return StoredResponse(entry.status, tuple(merged.items()), request_time, response_time,
                          entry.vary_key, entry.default_ttl, entry.heuristic_cap)
