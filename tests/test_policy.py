"""Tests of edge360.policy: storability, freshness, age, decisions, validation, invalidation.

Cases follow RFC 9111/5861/9213 and the behaviours the shared-cache conformance suite checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.conditional import http_date
from edge360.core.invalidation import invalidated_paths, invalidates
from edge360.core.policy import (
    Action,
    StoredResponse,
    can_serve_stale_on_error,
    decide,
    freshness_lifetime,
    not_storable_reason,
    revalidated,
    storable,
)
from edge360.core.storedfields import forwarded_request_fields, merge_304, stored_fields
from edge360.core.validation import conditional_headers, head_matches, validator_matches

T0 = 1_700_000_000.0  # the response arrives at this wall time (a whole second)
DAY = 86400.0


def make(headers: Mapping[str, str | None], status: int = 200, *,
         request_headers: Mapping[str, str] | None = None, default_ttl: float | None = None,
         request_time: float = T0) -> StoredResponse:
    """An entry received at T0 with `Date: T0` unless the case sets (or, with None, drops) it."""
    full: dict[str, str | None] = {"date": http_date(T0), **headers}
    clean = {k: v for k, v in full.items() if v is not None}
    return StoredResponse.from_response(status, clean, request_time=request_time, response_time=T0,
                                        request_headers=request_headers or {},
                                        default_ttl=default_ttl)


def ago(seconds: float) -> str:
    return http_date(T0 - seconds)


# --- storability (§3) -------------------------------------------------------------------------

# (method, status, request headers, response headers, storable)
STORABLE_CASES: list[tuple[str, int, dict[str, str], dict[str, str], bool]] = [
    ("GET", 200, {}, {"cache-control": "max-age=60"}, True),
    ("get", 200, {}, {"cache-control": "max-age=60"}, True),
    ("HEAD", 200, {}, {"cache-control": "max-age=60"}, False),  # HEAD only updates
    ("POST", 200, {}, {"cache-control": "max-age=60"}, False),
    ("GET", 200, {}, {}, True),  # heuristically cacheable status
    ("GET", 204, {}, {}, True),
    ("GET", 206, {}, {"cache-control": "max-age=60"}, True),
    ("GET", 404, {}, {}, True),
    ("GET", 410, {}, {}, True),
    ("GET", 501, {}, {}, True),
    ("GET", 201, {}, {}, False),  # not heuristically cacheable and nothing explicit
    ("GET", 302, {}, {}, False),
    ("GET", 500, {}, {}, False),
    ("GET", 503, {}, {"cache-control": "max-age=60"}, True),
    ("GET", 299, {}, {"cache-control": "max-age=60"}, True),  # unknown but explicit
    ("GET", 299, {}, {"cache-control": "public"}, True),
    ("GET", 299, {}, {"expires": "0"}, True),
    ("GET", 302, {}, {"expires": ago(-60)}, True),
    ("GET", 100, {}, {"cache-control": "max-age=60"}, False),
    ("GET", 304, {}, {"cache-control": "max-age=60"}, False),
    ("GET", 200, {}, {"cache-control": "no-store"}, False),
    ("GET", 200, {}, {"cache-control": "max-age=60, No-Store"}, False),
    ("GET", 200, {"cache-control": "no-store"}, {"cache-control": "max-age=60"}, False),
    ("GET", 200, {}, {"cache-control": "private, max-age=60"}, False),
    ("GET", 200, {}, {"cache-control": 'private="set-cookie", max-age=60'}, False),
    ("GET", 200, {}, {"cache-control": "public, private, max-age=60"}, False),
    ("GET", 200, {}, {"cache-control": "no-cache"}, True),  # stored, revalidated on use
    ("GET", 200, {}, {"cache-control": "must-understand, no-store, max-age=60"}, True),
    ("GET", 299, {}, {"cache-control": "must-understand, no-store, max-age=60"}, False),
    ("GET", 299, {}, {"cache-control": "must-understand, max-age=60"}, False),
    ("GET", 200, {"authorization": "Bearer x"}, {"cache-control": "max-age=60"}, False),
    ("GET", 200, {"authorization": "Bearer x"}, {"cache-control": "public, max-age=60"}, True),
    ("GET", 200, {"authorization": "Bearer x"}, {"cache-control": "s-maxage=60"}, True),
    ("GET", 200, {"authorization": "x"}, {"cache-control": "must-revalidate, max-age=60"}, True),
    ("GET", 200, {}, {"cache-control": "max-age=60", "vary": "*"}, False),
    ("GET", 200, {}, {"cache-control": "max-age=60", "vary": "Accept-Encoding"}, True),
    # RFC 9213: the targeted field replaces Cache-Control for this cache
    ("GET", 200, {}, {"cache-control": "no-store", "cdn-cache-control": "max-age=60"}, True),
    ("GET", 200, {}, {"cache-control": "max-age=60", "cdn-cache-control": "no-store"}, False),
    ("GET", 200, {}, {"cache-control": "private", "edge360-cache-control": "max-age=5"}, True),
    ("GET", 200, {}, {"cache-control": "max-age=60", "cdn-cache-control": "private"}, False),
    ("GET", 200, {}, {"cache-control": "no-store", "cdn-cache-control": "Max-Age=60"}, False),
    ("GET", 200, {}, {"pragma": "no-cache", "cache-control": "max-age=60"}, True),
]


@pytest.mark.parametrize(("method", "status", "req", "resp", "expected"), STORABLE_CASES)
def test_storable(method: str, status: int, req: dict[str, str], resp: dict[str, str],
                  expected: bool) -> None:
    assert storable(method, status, req, resp) is expected
    assert (not_storable_reason(method, status, req, resp) is None) is expected


# --- freshness lifetime (§4.2.1, §4.2.2) ------------------------------------------------------

# (response headers, status, default_ttl, expected lifetime)
LIFETIME_CASES: list[tuple[dict[str, str | None], int, float | None, float]] = [
    ({"cache-control": "max-age=3600"}, 200, None, 3600),
    ({"cache-control": "max-age=0"}, 200, None, 0),
    ({"cache-control": "s-maxage=60, max-age=3600"}, 200, None, 60),
    ({"cache-control": "max-age=3600, s-maxage=0"}, 200, None, 0),
    ({"cache-control": "max-age=0, s-maxage=3600"}, 200, None, 3600),
    ({"cache-control": "s-maxage=abc, max-age=3600"}, 200, None, 0),
    ({"cache-control": "max-age=abc"}, 200, None, 0),  # invalid: stale, not heuristic
    ({"cache-control": "max-age=abc", "last-modified": ago(DAY)}, 200, None, 0),
    ({"cache-control": "max-age=abc"}, 200, 60.0, 0),
    ({"cache-control": "max-age=-1"}, 200, None, 0),
    ({"cache-control": "max-age=3600.5"}, 200, None, 0),
    ({"cache-control": 'max-age="3600"'}, 200, None, 3600),
    ({"cache-control": "max-age=3600, max-age=1"}, 200, None, 0),
    ({"cache-control": "max-age=99999999999"}, 200, None, 2**31),
    ({"cache-control": "max-age=3600", "expires": ago(60)}, 200, None, 3600),  # max-age wins
    ({"cache-control": "max-age=3600", "expires": "0"}, 200, None, 3600),
    ({"expires": ago(-600)}, 200, None, 600),
    ({"expires": ago(-600)}, 299, None, 600),
    ({"expires": ago(60)}, 200, None, 0),
    ({"expires": "0"}, 200, None, 0),
    ({"expires": "0", "last-modified": ago(DAY)}, 200, 60.0, 0),
    ({"expires": ago(-600), "date": ago(100)}, 200, None, 700),  # Expires - Date
    ({"expires": ago(-600), "date": None}, 200, None, 600),  # receipt time stands in
    ({"expires": ago(-600), "date": "nonsense"}, 200, None, 600),
    ({"last-modified": ago(100_000)}, 200, None, 10_000),  # 10% heuristic
    ({"last-modified": ago(100_000), "date": ago(50_000)}, 200, None, 5_000),
    ({"last-modified": ago(100 * DAY)}, 200, None, DAY),  # capped
    ({"last-modified": ago(-100)}, 200, None, 0),  # modified "in the future"
    ({"last-modified": ago(100_000)}, 404, None, 10_000),
    ({"last-modified": ago(100_000)}, 201, None, 0),  # not heuristically cacheable
    ({"last-modified": ago(100_000)}, 299, None, 0),
    ({"last-modified": ago(100_000), "cache-control": "public"}, 299, None, 10_000),
    ({"last-modified": "garbage"}, 200, None, 0),
    ({}, 200, None, 0),
    ({}, 200, 30.0, 30),  # the caller's per-kind default when the upstream is silent
    ({"cache-control": "public"}, 200, 30.0, 30),
    ({}, 404, 5.0, 5),
    ({}, 500, 5.0, 0),
    ({}, 201, 5.0, 0),
    ({"cache-control": "max-age=10"}, 200, 30.0, 10),
    ({"last-modified": ago(100_000)}, 200, 30.0, 10_000),  # heuristic before the default
    ({"cdn-cache-control": "max-age=600", "cache-control": "max-age=60"}, 200, None, 600),
    ({"cdn-cache-control": "max-age=0", "cache-control": "max-age=60"}, 200, None, 0),
    ({"cdn-cache-control": "Max-Age=600", "cache-control": "max-age=60"}, 200, None, 60),
    ({"cdn-cache-control": "s-maxage=5, max-age=600"}, 200, None, 5),
    ({"edge360-cache-control": "max-age=10", "cdn-cache-control": "max-age=600"}, 200, None, 10),
    ({"edge360-cache-control": "max-age=?", "cdn-cache-control": "max-age=600"}, 200, None, 600),
    ({"cdn-cache-control": 'max-age="600"', "cache-control": "max-age=60"}, 200, None, 0),
    # a targeted field rules alone: Expires and Cache-Control are ignored by this cache
    ({"cdn-cache-control": "public", "expires": ago(-600)}, 200, None, 0),
    ({"cdn-cache-control": "public", "cache-control": "max-age=600"}, 200, 7.0, 7),
]


@pytest.mark.parametrize(("headers", "status", "default_ttl", "expected"), LIFETIME_CASES)
def test_freshness_lifetime(headers: dict[str, str | None], status: int,
                            default_ttl: float | None, expected: float) -> None:
    entry = make(headers, status, default_ttl=default_ttl)
    assert entry.freshness_lifetime == pytest.approx(expected)
    direct = freshness_lifetime(status, entry.fields, response_time=T0, default_ttl=default_ttl)
    assert direct == pytest.approx(expected)


def test_heuristic_cap_is_configurable() -> None:
    headers = {"date": http_date(T0), "last-modified": ago(100 * DAY)}
    assert freshness_lifetime(200, headers, response_time=T0, heuristic_cap=60) == 60


# --- age (§4.2.3) -----------------------------------------------------------------------------

# (headers, request_time, seconds after receipt, expected current age)
AGE_CASES: list[tuple[dict[str, str | None], float, float, float]] = [
    ({}, T0, 0, 0),
    ({}, T0, 10, 10),  # resident time
    ({"age": "100"}, T0, 0, 100),
    ({"age": "100"}, T0, 5, 105),
    ({"age": "100"}, T0 - 3, 0, 103),  # response_delay corrects the Age
    ({}, T0 - 3, 0, 3),
    ({"date": ago(50)}, T0, 0, 50),  # apparent age
    ({"date": ago(50), "age": "10"}, T0, 0, 50),
    ({"date": ago(50), "age": "80"}, T0, 0, 80),
    ({"date": ago(-50)}, T0, 0, 0),  # a Date in the future is no negative age
    ({"date": None, "age": "7"}, T0, 0, 7),
    ({"date": "garbage"}, T0, 1, 1),
    ({"age": "-7200"}, T0, 0, 0),  # invalid Age: ignored
    ({"age": "7200.0"}, T0, 0, 0),
    ({"age": "abc"}, T0, 0, 0),
    ({"age": "10, 7200"}, T0, 0, 10),  # §5.1: the first member counts
    ({"age": "7200, 10"}, T0, 0, 7200),
    ({"age": "2147483650"}, T0, 0, 2**31),
    ({}, T0, -5, 0),  # a clock stepping back never makes the entry younger than received
]


@pytest.mark.parametrize(("headers", "request_time", "after", "expected"), AGE_CASES)
def test_current_age(headers: dict[str, str | None], request_time: float, after: float,
                     expected: float) -> None:
    entry = make(headers, request_time=request_time)
    assert entry.current_age(T0 + after) == pytest.approx(expected)
    assert entry.age_header(T0 + after) == str(int(expected))


def test_fresh_only_while_lifetime_exceeds_age() -> None:
    entry = make({"cache-control": "max-age=10"})
    assert entry.is_fresh(T0 + 9.5) and entry.staleness(T0 + 9.5) == pytest.approx(-0.5)
    assert not entry.is_fresh(T0 + 10) and entry.staleness(T0 + 10) == 0
    assert not make({"cache-control": "max-age=10", "age": "10"}).is_fresh(T0)


def test_age_header_is_whole_seconds() -> None:
    assert make({"age": "5"}).age_header(T0 + 0.9) == "5"
    assert make({"age": "5"}).age_header(T0 + 1.0) == "6"


# --- serving decisions (§4.2, §4.3, RFC 5861) -------------------------------------------------

F, SWR, S, R, M, G = (Action.FRESH, Action.STALE_REVALIDATE_BACKGROUND, Action.STALE,
                      Action.REVALIDATE, Action.MISS, Action.GATEWAY_TIMEOUT)

# (response headers, request headers, seconds after receipt, expected action)
DECIDE_CASES: list[tuple[dict[str, str | None], dict[str, str], float, Action]] = [
    ({"cache-control": "max-age=100"}, {}, 0, F),
    ({"cache-control": "max-age=100"}, {}, 99, F),
    ({"cache-control": "max-age=100"}, {}, 100, R),  # fresh only while lifetime > age
    ({"cache-control": "max-age=100"}, {}, 101, R),
    ({"cache-control": "max-age=100", "age": "150"}, {}, 0, R),
    ({"cache-control": "max-age=100", "age": "-150"}, {}, 0, F),
    ({"cache-control": "max-age=100", "date": ago(150)}, {}, 0, R),
    ({"cache-control": "max-age=0"}, {}, 0, R),
    ({"cache-control": "max-age=abc"}, {}, 0, R),
    ({"cache-control": "s-maxage=0, max-age=100"}, {}, 0, R),
    ({"cache-control": "no-cache, max-age=100"}, {}, 0, R),
    ({"cache-control": 'no-cache="set-cookie", max-age=100'}, {}, 0, R),
    ({"expires": ago(-100)}, {}, 50, F),
    ({"expires": "0"}, {}, 0, R),
    ({"last-modified": ago(100_000)}, {}, 5_000, F),
    ({}, {}, 0, R),
    # stale-while-revalidate (RFC 5861 §3), configured maximum 30 in these cases
    ({"cache-control": "max-age=10, stale-while-revalidate=20"}, {}, 5, F),
    ({"cache-control": "max-age=10, stale-while-revalidate=20"}, {}, 15, SWR),
    ({"cache-control": "max-age=10, stale-while-revalidate=20"}, {}, 30, SWR),
    ({"cache-control": "max-age=10, stale-while-revalidate=20"}, {}, 31, R),
    ({"cache-control": "max-age=10, stale-while-revalidate=9999"}, {}, 39, SWR),
    ({"cache-control": "max-age=10, stale-while-revalidate=9999"}, {}, 41, R),  # capped at 30
    ({"cache-control": "max-age=10, stale-while-revalidate=abc"}, {}, 11, R),
    ({"cache-control": "max-age=10, stale-while-revalidate=20, must-revalidate"}, {}, 15, R),
    ({"cache-control": "max-age=10, stale-while-revalidate=20, proxy-revalidate"}, {}, 15, R),
    ({"cache-control": "max-age=10, stale-while-revalidate=20, no-cache"}, {}, 15, R),
    ({"cache-control": "s-maxage=10, stale-while-revalidate=20"}, {}, 15, SWR),
    ({"cache-control": "max-age=10, stale-while-revalidate=20"}, {"cache-control": "no-cache"},
     15, R),
    ({"cdn-cache-control": "max-age=10, stale-while-revalidate=20",
      "cache-control": "no-store"}, {}, 15, SWR),
    # request directives (§5.2.1)
    ({"cache-control": "max-age=100"}, {"cache-control": "no-cache"}, 0, R),
    ({"cache-control": "max-age=100"}, {"pragma": "no-cache"}, 0, R),
    ({"cache-control": "max-age=100"}, {"pragma": "no-cache", "cache-control": "max-stale"}, 0, F),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-age=0"}, 0, F),  # age 0 <= 0
    ({"cache-control": "max-age=100"}, {"cache-control": "max-age=0"}, 1, R),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-age=50"}, 40, F),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-age=50"}, 60, R),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-age=abc"}, 60, F),  # ignored
    ({"cache-control": "max-age=100"}, {"cache-control": "min-fresh=50"}, 40, F),
    ({"cache-control": "max-age=100"}, {"cache-control": "min-fresh=50"}, 60, R),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-stale"}, 1000, S),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-stale=50"}, 140, S),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-stale=50"}, 160, R),
    ({"cache-control": "max-age=100"}, {"cache-control": "max-stale=abc"}, 140, R),
    ({"cache-control": "max-age=100, must-revalidate"}, {"cache-control": "max-stale"}, 140, R),
    ({"cache-control": "s-maxage=100"}, {"cache-control": "max-stale"}, 140, R),
    ({"cache-control": "max-age=100, no-cache"}, {"cache-control": "max-stale"}, 0, R),
    ({"cache-control": "max-age=100, immutable"}, {"cache-control": "no-cache"}, 0, F),
    ({"cache-control": "max-age=100, immutable"}, {"cache-control": "max-age=0"}, 50, F),
    ({"cache-control": "max-age=100, immutable"}, {"cache-control": "no-cache"}, 150, R),
    ({"cache-control": "max-age=100"}, {"cache-control": "only-if-cached"}, 0, F),
    ({"cache-control": "max-age=100"}, {"cache-control": "only-if-cached"}, 150, G),
    ({"cache-control": "max-age=100"}, {"cache-control": "only-if-cached, max-stale"}, 150, S),
    ({"cache-control": "no-cache"}, {"cache-control": "only-if-cached"}, 0, G),
    ({"cache-control": "max-age=10, stale-while-revalidate=20"},
     {"cache-control": "only-if-cached"}, 15, SWR),
]


@pytest.mark.parametrize(("resp", "req", "after", "expected"), DECIDE_CASES)
def test_decide(resp: dict[str, str | None], req: dict[str, str], after: float,
                expected: Action) -> None:
    decision = decide(make(resp), req, T0 + after, stale_while_revalidate_max=30)
    assert decision.action is expected, decision.reason
    if expected in (F, SWR, S, R):
        assert decision.age == int(make(resp).current_age(T0 + after))


def test_decide_without_entry() -> None:
    assert decide(None, {}, T0, stale_while_revalidate_max=30).action is M
    only = {"cache-control": "only-if-cached"}
    assert decide(None, only, T0, stale_while_revalidate_max=30).action is G


def test_request_reload_directives_can_be_ignored() -> None:
    entry = make({"cache-control": "max-age=100"})
    for req in ({"cache-control": "no-cache"}, {"pragma": "no-cache"},
                {"cache-control": "max-age=0"}):
        ignored = decide(entry, req, T0 + 10, stale_while_revalidate_max=30,
                         honor_request_no_cache=False)
        assert ignored.action is F
        assert decide(entry, req, T0 + 10, stale_while_revalidate_max=30).action is R


# (response headers, configured default window, max, seconds after, expected)
SWR_DEFAULT_CASES: list[tuple[dict[str, str | None], float, float, float, Action]] = [
    ({"cache-control": "max-age=10"}, 20, 30, 25, SWR),  # the edge's default, upstream silent
    ({"cache-control": "max-age=10"}, 20, 30, 31, R),
    ({"cache-control": "max-age=10"}, 20, 5, 16, R),  # default capped by the maximum
    ({"cache-control": "max-age=10"}, 0, 30, 11, R),
    ({"cache-control": "max-age=10, stale-while-revalidate=0"}, 20, 30, 11, R),  # explicit 0
    ({"cache-control": "max-age=10, must-revalidate"}, 20, 30, 11, R),
    ({"cache-control": "s-maxage=10"}, 20, 30, 11, R),  # implied proxy-revalidate
    ({"cache-control": "max-age=10, no-cache"}, 20, 30, 5, R),
]


@pytest.mark.parametrize(("resp", "default", "maximum", "after", "expected"), SWR_DEFAULT_CASES)
def test_swr_default_window(resp: dict[str, str | None], default: float, maximum: float,
                            after: float, expected: Action) -> None:
    decision = decide(make(resp), {}, T0 + after, stale_while_revalidate_max=maximum,
                      stale_while_revalidate_default=default)
    assert decision.action is expected


def test_vary_mismatch_is_a_miss() -> None:
    entry = make({"cache-control": "max-age=100", "vary": "Accept-Encoding"},
                 request_headers={"accept-encoding": "gzip"})

    def action(e: StoredResponse, req: dict[str, str]) -> Action:
        return decide(e, req, T0, stale_while_revalidate_max=30).action

    assert action(entry, {"accept-encoding": "gzip"}) is F
    assert action(entry, {"accept-encoding": "GZIP"}) is F
    assert action(entry, {"accept-encoding": "br"}) is M
    assert action(entry, {}) is M
    absent = make({"cache-control": "max-age=100", "vary": "Foo"})
    assert action(absent, {}) is F
    assert action(absent, {"foo": "1"}) is M


# --- stale-if-error (RFC 5861 §4) -------------------------------------------------------------

# (response headers, request headers, error, seconds after, default, expected)
SIE_CASES: list[tuple[dict[str, str | None], dict[str, str], int | BaseException, float,
                      float | None, bool]] = [
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 500, 50, 0, True),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 502, 70, 0, True),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 503, 71, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 504, 50, 0, True),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 501, 50, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, 404, 50, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, ConnectionError(), 50, 0, True),
    ({"cache-control": "max-age=10, stale-if-error=60"}, {}, TimeoutError(), 80, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=abc"}, {}, 500, 11, None, False),
    ({"cache-control": "max-age=10, stale-if-error=99999"}, {}, 500, 3000, 0, True),
    ({"cache-control": "max-age=10, stale-if-error=99999"}, {}, 500, 4000, 0, False),  # cap
    ({"cache-control": "max-age=10, stale-if-error=60, must-revalidate"}, {}, 500, 50, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=60, proxy-revalidate"}, {}, 500, 50, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=60, no-cache"}, {}, 500, 5, 0, False),
    ({"cache-control": "max-age=100, must-revalidate"}, {}, 500, 50, 0, True),  # still fresh
    ({"cache-control": "s-maxage=10, stale-if-error=60"}, {}, 500, 50, 0, True),
    ({"cache-control": "s-maxage=10"}, {}, 500, 50, None, False),
    ({"cache-control": "max-age=10"}, {}, 500, 50, None, True),  # silent: the configured window
    ({"cache-control": "max-age=10"}, {}, 500, 4000, None, False),
    ({"cache-control": "max-age=10"}, {}, 500, 50, 0, False),  # the caller disabled the default
    ({"cache-control": "max-age=10"}, {}, 500, 50, 100, True),
    ({"cache-control": "max-age=10"}, {"cache-control": "stale-if-error=60"}, 500, 50, 0, True),
    ({"cache-control": "max-age=10"}, {"cache-control": "stale-if-error=60"}, 500, 80, 0, False),
    ({"cache-control": "max-age=10"}, {"cache-control": "max-stale=60"}, 500, 50, 0, True),
    ({"cache-control": "max-age=10, must-revalidate"}, {"cache-control": "max-stale"}, 500, 50,
     None, False),
    ({"cache-control": "s-maxage=10"}, {"cache-control": "stale-if-error=60"}, 500, 50, 0, False),
    ({"cache-control": "max-age=10, stale-if-error=5"},
     {"cache-control": "stale-if-error=60"}, 500, 50, 0, True),
]


@pytest.mark.parametrize("case", SIE_CASES)
def test_stale_if_error(case: tuple[dict[str, str | None], dict[str, str], int | BaseException,
                                    float, float | None, bool]) -> None:
    resp, req, error, after, default, expected = case
    ok = can_serve_stale_on_error(make(resp), T0 + after, error, 3600, request_headers=req,
                                  stale_if_error_default=default)
    assert ok is expected


# --- validation (§4.3) ------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "expected"), [
    ({"etag": '"abc"'}, {"if-none-match": '"abc"'}),
    ({"etag": 'W/"abc"'}, {"if-none-match": 'W/"abc"'}),
    ({"last-modified": ago(100)}, {"if-modified-since": ago(100)}),
    ({"etag": '"a"', "last-modified": ago(100)},
     {"if-none-match": '"a"', "if-modified-since": ago(100)}),
    ({"last-modified": "garbage"}, {}),
    ({}, {}),
])
def test_conditional_headers(headers: dict[str, str], expected: dict[str, str]) -> None:
    assert conditional_headers(make(headers)) == expected


# (stored headers, 304 headers, the 304 identifies the stored response)
VALIDATOR_CASES: list[tuple[dict[str, str], dict[str, str], bool]] = [
    ({"etag": '"a"'}, {"etag": '"a"'}, True),
    ({"etag": '"a"'}, {"etag": '"b"'}, False),
    ({"etag": 'W/"a"'}, {"etag": '"a"'}, False),  # a strong validator needs a strong match
    ({"etag": '"a"'}, {"etag": 'W/"a"'}, True),  # a weak one matches weakly
    ({"etag": 'W/"a"'}, {"etag": 'W/"a"'}, True),
    ({"etag": 'W/"a"'}, {"etag": 'W/"b"'}, False),
    ({}, {"etag": '"a"'}, False),
    ({"etag": '"a"', "last-modified": ago(100)}, {"last-modified": ago(100)}, True),
    ({"last-modified": ago(100)}, {"last-modified": ago(100)}, True),
    ({"last-modified": ago(100)}, {"last-modified": ago(50)}, False),
    ({"last-modified": ago(100)}, {}, True),
    ({"etag": '"a"'}, {"cache-control": "max-age=60"}, True),
]


@pytest.mark.parametrize(("stored", "new", "expected"), VALIDATOR_CASES)
def test_validator_matches(stored: dict[str, str], new: dict[str, str], expected: bool) -> None:
    assert validator_matches(make(stored), new) is expected


def test_merge_304() -> None:
    stored = {"content-type": "video/mp2t", "content-length": "100", "etag": '"a"',
              "cache-control": "max-age=10", "x-old": "1", "content-range": "bytes 0-99/200",
              "warning": '110 - "stale", 299 - "kept, really"'}
    new = {"cache-control": "max-age=600", "content-length": "0", "x-new": "2",
           "content-range": "bytes */5", "connection": "close, x-hop", "x-hop": "h",
           "transfer-encoding": "chunked", "content-type": "video/MP2T"}
    merged = merge_304(stored, new)
    assert merged == {"content-type": "video/MP2T", "content-length": "100", "etag": '"a"',
                      "cache-control": "max-age=600", "x-old": "1", "x-new": "2",
                      "content-range": "bytes 0-99/200", "warning": '299 - "kept, really"'}
    assert "warning" not in merge_304({"warning": '110 - "x"'}, {})


def test_revalidated_refreshes_timing_and_headers() -> None:
    entry = make({"cache-control": "max-age=10", "etag": '"a"', "age": "5"})
    assert not entry.is_fresh(T0 + 100)
    later = T0 + 100
    fresh = revalidated(entry, {"cache-control": "max-age=60", "date": http_date(later)},
                        request_time=later - 1, response_time=later)
    assert fresh.fields["cache-control"] == "max-age=60"
    assert "age" not in fresh.fields  # the old Age described the old exchange
    assert fresh.current_age(later) == pytest.approx(1)
    assert fresh.is_fresh(later + 50) and not fresh.is_fresh(later + 60)
    undated = revalidated(entry, {}, request_time=later, response_time=later)
    assert undated.fields["date"] == http_date(later)
    assert undated.is_fresh(later + 5)  # the old max-age=10 counted from the new exchange
    aged = revalidated(entry, {"age": "3"}, request_time=later, response_time=later)
    assert aged.current_age(later) == 3


# (stored headers, HEAD headers, HEAD may freshen the stored response)
HEAD_CASES: list[tuple[dict[str, str], dict[str, str], bool]] = [
    ({"etag": '"a"', "content-length": "10"}, {"etag": '"a"', "content-length": "10"}, True),
    ({"etag": '"a"', "content-length": "10"}, {"etag": '"a"'}, True),
    ({"etag": '"a"', "content-length": "10"}, {"etag": '"a"', "content-length": "11"}, False),
    ({"etag": '"a"'}, {"etag": '"b"'}, False),
    ({"etag": '"a"'}, {"last-modified": ago(5)}, False),
    ({"last-modified": ago(5)}, {"last-modified": ago(5)}, True),
    ({"etag": '"a"'}, {}, False),
    ({"content-length": "10"}, {"content-length": "10"}, False),
]


@pytest.mark.parametrize(("stored", "head", "expected"), HEAD_CASES)
def test_head_matches(stored: dict[str, str], head: dict[str, str], expected: bool) -> None:
    assert head_matches(make(stored), head) is expected


def test_stored_fields_drop_hop_by_hop() -> None:
    headers = {"connection": "x-a", "x-a": "1", "keep-alive": "5", "transfer-encoding": "chunked",
               "etag": '"e"', "upgrade": "h2c", "te": "trailers"}
    assert stored_fields(headers) == {"etag": '"e"'}
    entry = make(headers)
    assert "keep-alive" not in entry.fields and entry.fields["etag"] == '"e"'


# --- invalidation (§4.4) ----------------------------------------------------------------------

@pytest.mark.parametrize(("method", "status", "expected"), [
    ("POST", 200, True), ("PUT", 201, True), ("DELETE", 204, True), ("PATCH", 303, True),
    ("M-SEARCH", 200, True), ("post", 200, True), ("POST", 404, False), ("POST", 500, False),
    ("POST", 100, False), ("GET", 200, False), ("HEAD", 200, False), ("OPTIONS", 200, False),
    ("TRACE", 200, False),
])
def test_invalidates(method: str, status: int, expected: bool) -> None:
    assert invalidates(method, status) is expected


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/a", {}, ["/a"]),
    ("/a", {"location": "/b"}, ["/a", "/b"]),
    ("/dir/a", {"location": "b?x=1"}, ["/dir/a", "/dir/b?x=1"]),
    ("/a", {"content-location": "http://edge.example/c"}, ["/a", "/c"]),
    ("/a", {"content-location": "http://EDGE.example:80/c"}, ["/a", "/c"]),
    ("/a", {"location": "https://edge.example/d"}, ["/a", "/d"]),
    ("/a", {"location": "http://other.example/b"}, ["/a"]),  # another host: never
    ("/a", {"location": "//other.example/b"}, ["/a"]),
    ("/a", {"location": "http://edge.example:8080/b"}, ["/a"]),
    ("/a", {"location": "/a"}, ["/a"]),
    ("/a", {"location": "/b", "content-location": "/b"}, ["/a", "/b"]),
    ("/a", {"location": "mailto:x@edge.example"}, ["/a"]),
    ("/a", {"location": "http://[::1"}, ["/a"]),
])
def test_invalidated_paths(path: str, headers: dict[str, str], expected: list[str]) -> None:
    assert invalidated_paths(path, headers, "edge.example") == expected


# --- serialisation ----------------------------------------------------------------------------

def test_to_dict_round_trip() -> None:
    entry = make({"cache-control": "max-age=10", "vary": "Foo"}, request_headers={"foo": "x"},
                 default_ttl=30.0)
    data = json.loads(json.dumps(entry.to_dict()))
    back = StoredResponse.from_dict(data)
    assert back == entry
    assert back.freshness_lifetime == entry.freshness_lifetime


@pytest.mark.parametrize("data", [
    {}, {"status": 200}, {"status": "x", "headers": [], "request_time": 0, "response_time": 0},
    {"status": 200, "headers": [["a"]], "request_time": 0, "response_time": 0},
    {"status": 200, "headers": 5, "request_time": 0, "response_time": 0},
])
def test_from_dict_rejects_damage(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        StoredResponse.from_dict(data)


# --- properties -------------------------------------------------------------------------------

_CC = st.lists(st.sampled_from([
    "max-age=0", "max-age=60", "max-age=abc", "s-maxage=30", "no-cache", "must-revalidate",
    "stale-while-revalidate=20", "stale-if-error=100", "public", "immutable", "proxy-revalidate",
    "max-age=-1", "s-maxage=x", "private"]), max_size=4).map(", ".join)
_OFFSET = st.floats(-10 * DAY, 10 * DAY, allow_nan=False)
_RESPONSE = st.fixed_dictionaries({}, optional={
    "cache-control": _CC, "cdn-cache-control": _CC,
    "age": st.one_of(st.integers(-5, 10**10).map(str), st.text(max_size=5)),
    "expires": st.one_of(_OFFSET.map(lambda o: http_date(T0 + o)), st.just("0")),
    "last-modified": _OFFSET.map(lambda o: http_date(T0 + o)),
    "date": st.one_of(_OFFSET.map(lambda o: http_date(T0 + o)), st.none()),
})
_STATUS = st.sampled_from([200, 203, 204, 206, 299, 301, 404, 500, 503])
_REQUEST = st.fixed_dictionaries({}, optional={"cache-control": st.sampled_from(
    ["max-stale", "max-stale=10", "min-fresh=5", "only-if-cached", "stale-if-error=30"])})


@given(_RESPONSE, _STATUS, st.one_of(st.none(), st.floats(0, DAY)))
def test_lifetime_never_negative(headers: dict[str, str | None], status: int,
                                 default_ttl: float | None) -> None:
    entry = make(headers, status, default_ttl=default_ttl)
    assert entry.freshness_lifetime >= 0


@given(_RESPONSE, _STATUS, _REQUEST, st.floats(0, 10 * DAY), st.floats(0, 10 * DAY))
def test_never_fresh_again(headers: dict[str, str | None], status: int, req: dict[str, str],
                           a: float, b: float) -> None:
    entry = make(headers, status, default_ttl=10)
    early, late = sorted((a, b))
    first = decide(entry, req, T0 + early, stale_while_revalidate_max=30,
                   stale_while_revalidate_default=5)
    second = decide(entry, req, T0 + late, stale_while_revalidate_max=30,
                    stale_while_revalidate_default=5)
    if first.action is not Action.FRESH:
        assert second.action is not Action.FRESH
    if not entry.is_fresh(T0 + early):
        assert not entry.is_fresh(T0 + late)
    assert entry.current_age(T0 + late) >= entry.current_age(T0 + early)
    assert second.age >= first.age or second.action in (Action.MISS, Action.GATEWAY_TIMEOUT)


@given(_RESPONSE, _STATUS, st.floats(0, 10 * DAY), st.floats(0, 10 * DAY))
def test_stale_on_error_window_only_shrinks(headers: dict[str, str | None], status: int,
                                            a: float, b: float) -> None:
    entry = make(headers, status)
    early, late = sorted((a, b))
    if not can_serve_stale_on_error(entry, T0 + early, 503, 3600):
        assert not can_serve_stale_on_error(entry, T0 + late, 503, 3600)


@given(_RESPONSE, _STATUS)
def test_round_trip_property(headers: dict[str, str | None], status: int) -> None:
    entry = make(headers, status)
    assert StoredResponse.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


def test_a_304_never_relabels_the_stored_bytes() -> None:
    """§3.2: the coding and digest describe the stored bytes; a 304 updates the other fields."""
    stored = {"content-encoding": "gzip", "content-md5": "A==", "content-type": "text/plain",
              "x-test": "a"}
    merged = merge_304(stored, {"content-encoding": "br", "content-md5": "B==",
                                "content-type": "text/html", "x-test": "b"})
    assert merged == {"content-encoding": "gzip", "content-md5": "A==",
                      "content-type": "text/html", "x-test": "b"}


def test_forwarded_request_fields() -> None:
    """End-to-end request fields go upstream (RFC 9110 §7.6); hop-by-hop and Connection-listed
    ones, the fields the edge writes for its own exchange, and CMCD never do."""
    client = {"accept-language": "en", "cookie": "a=b", "authorization": "Basic x",
              "cache-control": "no-cache", "x-custom": "1", "connection": "close, x-hop",
              "x-hop": "h", "keep-alive": "5", "host": "edge", "range": "bytes=0-1",
              "if-none-match": '"e"', "if-modified-since": "x", "accept-encoding": "gzip",
              "via": "1.1 other", "cdn-loop": "x", "cmcd-session": 'sid="v"',
              "cmcd-request": "bl=1", "te": "trailers"}
    assert forwarded_request_fields(client) == {
        "accept-language": "en", "cookie": "a=b", "authorization": "Basic x",
        "cache-control": "no-cache", "x-custom": "1"}
