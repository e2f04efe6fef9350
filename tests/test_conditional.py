"""Tests for edge360.conditional: validators and precondition evaluation (RFC 9110 §8.8, §13)."""

from __future__ import annotations

import calendar
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.conditional import (
    Outcome,
    evaluate_preconditions,
    http_date,
    if_range_matches,
    make_etag,
    parse_http_date,
    strong_match,
    weak_match,
)

P, NM, PF = Outcome.PROCEED, Outcome.NOT_MODIFIED, Outcome.PRECONDITION_FAILED

ETAG = make_etag(1234, 1_700_000_000_123_456_789)
OTHER = make_etag(1234, 1_700_000_001_000_000_000)
LM = 784111777.75  # Sun, 06 Nov 1994 08:49:37 GMT plus a fraction the header cannot carry
LM_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"


def test_make_etag_is_strong_and_distinguishes() -> None:
    assert ETAG.startswith('"') and ETAG.endswith('"')
    assert strong_match(ETAG, ETAG)
    assert ETAG != OTHER
    assert make_etag(1, 2) != make_etag(2, 1)
    assert make_etag(0x12, 0x34) == '"12-34"'


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
    "Sun Nov  6 08:49:37 1994",  # asctime
    "  Sun, 06 Nov 1994 08:49:37 GMT ",
])
def test_parse_http_date_forms(value: str) -> None:
    assert parse_http_date(value) == 784111777.0


@pytest.mark.parametrize(("value", "expected"), [
    ("Thursday, 01-Jan-70 00:00:00 GMT", 0.0),
    ("Tuesday, 01-Jan-69 00:00:00 GMT", calendar.timegm((2069, 1, 1, 0, 0, 0))),  # pivot
    ("Wed, 31 Dec 2008 23:59:60 GMT", calendar.timegm((2008, 12, 31, 23, 59, 59))),  # leap s
    ("Thu, 29 Feb 2024 00:00:00 GMT", calendar.timegm((2024, 2, 29, 0, 0, 0))),
])
def test_parse_http_date_edges(value: str, expected: float) -> None:
    assert parse_http_date(value) == expected


@pytest.mark.parametrize("value", [
    None, "", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 1994 08:49:37 +0000",
    "Sun, 6 Nov 1994 08:49:37 GMT", "sun, 06 nov 1994 08:49:37 GMT",
    "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
    "Sun, 00 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 0000 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # two members
    "784111777", "Sun, ٠٦ Nov 1994 08:49:37 GMT",
])
def test_parse_http_date_invalid(value: str | None) -> None:
    assert parse_http_date(value) is None


@given(st.integers(0, 253402300799))
def test_http_date_round_trip(ts: int) -> None:
    text = http_date(ts)
    assert text.endswith(" GMT")
    assert parse_http_date(text) == ts
    assert parse_http_date(http_date(ts + 0.999)) == ts
    assert email.utils.parsedate_to_datetime(text).timestamp() == ts


@given(st.text())
def test_parse_http_date_never_raises(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)


@pytest.mark.parametrize(("a", "b", "strong", "weak"), [
    ('"1"', '"1"', True, True),
    ('W/"1"', '"1"', False, True),
    ('"1"', 'W/"1"', False, True),
    ('W/"1"', 'W/"1"', False, True),
    ('"1"', '"2"', False, False),
    ('"1"', ' "1" ', True, True),
    ("1", "1", False, False),  # unquoted: not an entity-tag
    ('w/"1"', '"1"', False, False),  # the W/ prefix is case-sensitive
    ('""', '""', True, True),
])
def test_etag_comparison(a: str, b: str, strong: bool, weak: bool) -> None:
    # the table of RFC 9110 §8.8.3.2, plus junk
    assert strong_match(a, b) is strong
    assert weak_match(a, b) is weak


def H(**fields: str) -> dict[str, str]:
    """Header names from keyword arguments: if_match -> if-match."""
    return {k.replace("_", "-"): v for k, v in fields.items()}


@pytest.mark.parametrize(("method", "headers", "outcome"), [
    ("GET", H(), P),
    # If-Match: strong comparison, "*" for any existing representation
    ("GET", H(if_match=ETAG), P),
    ("PUT", H(if_match=ETAG), P),
    ("GET", H(if_match=OTHER), PF),
    ("GET", H(if_match=f"W/{ETAG}"), PF),
    ("GET", H(if_match=f"{OTHER}, {ETAG}"), P),
    ("GET", H(if_match="*"), P),
    ("GET", H(if_match="junk"), PF),
    ("GET", H(if_match=f"junk, {ETAG}"), P),
    ("GET", H(if_match=""), PF),
    # If-Unmodified-Since only without If-Match; invalid dates are ignored
    ("GET", H(if_unmodified_since=LM_DATE), P),
    ("GET", H(if_unmodified_since=AFTER), P),
    ("GET", H(if_unmodified_since=BEFORE), PF),
    ("GET", H(if_unmodified_since="garbage"), P),
    ("GET", H(if_match=ETAG, if_unmodified_since=BEFORE), P),
    # If-None-Match: weak comparison; 304 for GET/HEAD, 412 otherwise
    ("GET", H(if_none_match=ETAG), NM),
    ("HEAD", H(if_none_match=ETAG), NM),
    ("get", H(if_none_match=ETAG), NM),
    ("GET", H(if_none_match=f"W/{ETAG}"), NM),
    ("GET", H(if_none_match=f'"a", "b,c" , {ETAG}'), NM),
    ("GET", H(if_none_match='"a","b"'), P),
    ("GET", H(if_none_match="*"), NM),
    ("POST", H(if_none_match="*"), PF),
    ("DELETE", H(if_none_match=ETAG), PF),
    ("POST", H(if_none_match=OTHER), P),
    ("GET", H(if_none_match="junk"), P),
    ("GET", H(if_none_match=ETAG[:-1]), P),  # unterminated quote never matches
    # If-Modified-Since: GET/HEAD only, ignored with If-None-Match or an invalid date
    ("GET", H(if_modified_since=LM_DATE), NM),
    ("GET", H(if_modified_since=AFTER), NM),
    ("GET", H(if_modified_since=BEFORE), P),
    ("HEAD", H(if_modified_since=LM_DATE), NM),
    ("POST", H(if_modified_since=LM_DATE), P),
    ("GET", H(if_modified_since="not a date"), P),
    ("GET", H(if_modified_since=f"{LM_DATE}, {LM_DATE}"), P),
    ("GET", H(if_none_match=OTHER, if_modified_since=AFTER), P),
    ("GET", H(if_none_match=ETAG, if_modified_since=BEFORE), NM),
    # order of §13.2.2: a failed If-Match wins over a matching If-None-Match
    ("GET", H(if_match=OTHER, if_none_match=ETAG), PF),
    ("GET", H(if_unmodified_since=BEFORE, if_none_match=ETAG), PF),
    ("GET", H(if_match=ETAG, if_none_match=ETAG), NM),
])
def test_preconditions_table(method: str, headers: dict[str, str], outcome: Outcome) -> None:
    assert evaluate_preconditions(method, headers, ETAG, LM) is outcome


@pytest.mark.parametrize(("headers", "outcome"), [
    (H(if_match=ETAG), PF),
    (H(if_match="*"), P),
    (H(if_none_match=ETAG), P),
    (H(if_none_match="*"), NM),
    (H(if_unmodified_since=BEFORE), P),  # no date to compare: ignored (§13.1.4)
    (H(if_modified_since=AFTER), P),
])
def test_preconditions_without_validators(headers: dict[str, str], outcome: Outcome) -> None:
    assert evaluate_preconditions("GET", headers, None, None) is outcome


@pytest.mark.parametrize(("value", "honour"), [
    (None, True),
    (ETAG, True),
    (f" {ETAG} ", True),
    (OTHER, False),
    (f"W/{ETAG}", False),  # a weak tag never satisfies If-Range (§13.1.5)
    (LM_DATE, True),
    ("Sunday, 06-Nov-94 08:49:37 GMT", True),
    (BEFORE, False),
    (AFTER, False),
    ("", False),
    ("junk", False),
    (f"{ETAG}, {ETAG}", False),
])
def test_if_range(value: str | None, honour: bool) -> None:
    assert if_range_matches(value, ETAG, LM) is honour


def test_if_range_without_validators() -> None:
    assert if_range_matches(None, None, None)
    assert not if_range_matches(ETAG, None, LM)
    assert not if_range_matches(LM_DATE, ETAG, None)
    assert not if_range_matches('W/"x"', 'W/"x"', None)


_etagc = st.text(alphabet=st.characters(min_codepoint=0x23, max_codepoint=0x7E), max_size=8)


@given(st.lists(_etagc, max_size=6), _etagc, st.lists(st.booleans(), min_size=6, max_size=6))
def test_tag_lists_match_by_membership(tags: list[str], current: str, weak: list[bool]) -> None:
    listed = ", ".join(("W/" if w else "") + f'"{t}"' for t, w in zip(tags, weak, strict=False))
    etag = f'"{current}"'
    inm = evaluate_preconditions("GET", {"if-none-match": listed}, etag, None)
    assert (inm is NM) == (current in tags)
    strong_in = any(t == current and not w for t, w in zip(tags, weak, strict=False))
    im = evaluate_preconditions("GET", {"if-match": listed}, etag, None)
    assert (im is P) == strong_in


@given(st.dictionaries(st.sampled_from(["if-match", "if-none-match", "if-modified-since",
                                        "if-unmodified-since"]), st.text(max_size=60)),
       st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
       st.one_of(st.none(), st.just(ETAG)), st.one_of(st.none(), st.floats(0, 2e9)))
def test_preconditions_total(headers: dict[str, str], method: str, etag: str | None,
                             lm: float | None) -> None:
    outcome = evaluate_preconditions(method, headers, etag, lm)
    if method in ("POST", "PUT"):
        assert outcome is not NM  # 304 is only for GET and HEAD
    if not headers:
        assert outcome is P
