"""Tests of edge360.cachecontrol: parsing cache directives, targeted fields, Age/Expires, Vary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.cachecontrol import (
    MAX_DELTA,
    Directives,
    age_value,
    cache_directives,
    date_value,
    downstream_headers,
    expires_value,
    last_modified_value,
    parse_cache_control,
    parse_targeted,
    request_directives,
    split_list,
    vary_fields,
    vary_key,
)

# (Cache-Control value, directive, expected valid delta or None, expected invalid)
DELTA_CASES = [
    ("max-age=3600", "max-age", 3600, False),
    ("Max-Age=3600", "max-age", 3600, False),  # §5.2: names are case-insensitive
    ("MAX-AGE=3600", "max-age", 3600, False),
    ('max-age="3600"', "max-age", 3600, False),  # quoted-string form is accepted
    ("max-age=0003600", "max-age", 3600, False),
    ("max-age=0", "max-age", 0, False),
    ("max-age=3600.5", "max-age", None, True),
    ("max-age=3600.0", "max-age", None, True),
    ("max-age=-1", "max-age", None, True),
    ("max-age=abc", "max-age", None, True),
    ("max-age='3600'", "max-age", None, True),
    ("max-age", "max-age", None, True),
    ("max-age=", "max-age", None, True),
    ("max-age = 3600", "max-age", None, True),  # no whitespace around "=" in the grammar
    ("max-age= 3600", "max-age", None, True),
    ("max-age =3600", "max-age", None, True),
    ("max-age=3600 junk", "max-age", None, True),
    ("max-age=3600;x", "max-age", None, True),
    ("max-age=99999999999999999999", "max-age", MAX_DELTA, False),  # §1.2.2 cap
    ("max-age=2147483648", "max-age", MAX_DELTA, False),
    ("max-age=2147483647", "max-age", 2147483647, False),
    ("max-age=3600, max-age=3600", "max-age", 3600, False),
    ("max-age=3600, max-age=1", "max-age", None, True),  # conflicting duplicates -> stale
    ("max-age=1, max-age=3600", "max-age", None, True),
    ("max-age=abc, max-age=3600", "max-age", None, True),
    ("max-age=3600, max-age=abc", "max-age", None, True),
    ("  max-age=60  ,  public ", "max-age", 60, False),
    (",,max-age=60,,", "max-age", 60, False),
    ("public, s-maxage=120", "s-maxage", 120, False),
    ("stale-while-revalidate=30", "stale-while-revalidate", 30, False),
    ("stale-if-error=x", "stale-if-error", None, True),
    ("max-stale", "max-stale", MAX_DELTA, False),  # bare: any staleness
    ("max-stale=10", "max-stale", 10, False),
    ("min-fresh=5", "min-fresh", 5, False),
    ("min-fresh", "min-fresh", None, True),
    ('no-cache="a,b", max-age=7', "max-age", 7, False),  # comma inside quotes is no separator
    ('x="a\\"b, max-age=1", max-age=7', "max-age", 7, False),
    ('"junk, max-age=7', "max-age", 7, False),  # a broken member is skipped to the next comma
]


@pytest.mark.parametrize(("value", "name", "delta", "invalid"), DELTA_CASES)
def test_delta_directives(value: str, name: str, delta: int | None, invalid: bool) -> None:
    d = parse_cache_control(value)
    assert d.delta(name) == delta
    assert (name in d.invalid) is invalid
    if delta is not None or invalid:
        assert d.has(name)


# (value, directives expected present, directives expected absent)
PRESENCE_CASES = [
    ("no-store", {"no-store"}, {"no-cache", "private"}),
    ("No-Store", {"no-store"}, set()),
    ("no-cache", {"no-cache"}, set()),
    ('no-cache="set-cookie"', {"no-cache"}, set()),
    ("private, max-age=60", {"private", "max-age"}, {"public"}),
    ("public, must-revalidate", {"public", "must-revalidate"}, {"proxy-revalidate"}),
    ("proxy-revalidate", {"proxy-revalidate"}, {"must-revalidate"}),
    ("must-understand, no-store", {"must-understand", "no-store"}, set()),
    ("immutable, max-age=31536000", {"immutable"}, set()),
    ("only-if-cached", {"only-if-cached"}, set()),
    ("foo, bar=baz, max-age=1", {"foo", "bar", "max-age"}, set()),  # unknown kept, harmless
    ("nostore", {"nostore"}, {"no-store"}),
    ("", set(), {"no-store"}),
]


@pytest.mark.parametrize(("value", "present", "absent"), PRESENCE_CASES)
def test_presence(value: str, present: set[str], absent: set[str]) -> None:
    d = parse_cache_control(value)
    assert present <= d.names
    assert not absent & d.names


@pytest.mark.parametrize(("value", "name", "fields"), [
    ('no-cache="Set-Cookie, X-Foo"', "no-cache", ("set-cookie", "x-foo")),
    ("no-cache=set-cookie", "no-cache", ("set-cookie",)),
    ('private="authorization"', "private", ("authorization",)),
    ("private", "private", None),
    ('private="a", private="b"', "private", ("a",)),
])
def test_field_name_lists(value: str, name: str, fields: tuple[str, ...] | None) -> None:
    d = parse_cache_control(value)
    assert d.has(name)
    assert d.field_names.get(name) == fields


# Targeted fields are RFC 8941 dictionaries (RFC 9213 §2.1): (value, None if ignored, else the
# expected (names, deltas, invalid))
TARGETED_CASES: list[tuple[str, tuple[set[str], dict[str, int], set[str]] | None]] = [
    ("max-age=60", ({"max-age"}, {"max-age": 60}, set())),
    ("max-age=60, stale-while-revalidate=10",
     ({"max-age", "stale-while-revalidate"}, {"max-age": 60, "stale-while-revalidate": 10}, set())),
    ("no-store", ({"no-store"}, {}, set())),
    ("no-store=?0, max-age=5", ({"max-age"}, {"max-age": 5}, set())),  # false = absent
    ("private=?1", ({"private"}, {}, set())),
    ('max-age="60"', ({"max-age"}, {}, {"max-age"})),  # a String, not an Integer
    ("max-age=1.5", ({"max-age"}, {}, {"max-age"})),
    ("max-age=-5", ({"max-age"}, {}, {"max-age"})),
    ("max-age=abc", ({"max-age"}, {}, {"max-age"})),
    ("max-age", ({"max-age"}, {}, {"max-age"})),
    ("max-age=10, max-age=20", ({"max-age"}, {"max-age": 20}, set())),  # RFC 8941: last wins
    ("max-age=60;foo=bar, public", ({"max-age", "public"}, {"max-age": 60}, set())),
    ('no-cache=("a" "b")', ({"no-cache"}, {}, set())),
    ("a=:aGk=:, b=?1, c=tok/en, max-age=3", ({"a", "b", "c", "max-age"}, {"max-age": 3}, set())),
    ("Max-Age=60", None),  # keys are lower-case only
    ("max-age=60,", None),  # trailing comma
    ("max-age=60 public", None),
    ("max-age=9999999999999999", None),  # Integers have at most 15 digits
    ("", None),
    ("   ", None),
    ('max-age="unterminated', None),
    ("(a b", None),
    ("max-age=(1 2", None),
]


@pytest.mark.parametrize(("value", "expected"), TARGETED_CASES)
def test_parse_targeted(
        value: str, expected: tuple[set[str], dict[str, int], set[str]] | None) -> None:
    d = parse_targeted(value)
    if expected is None:
        assert d is None
        return
    assert d is not None
    names, deltas, invalid = expected
    assert d.names == names
    assert dict(d.deltas) == deltas
    assert d.invalid == invalid
    assert d.targeted


# (headers, source expected, max-age expected): RFC 9213 §2.2 precedence
PRECEDENCE_CASES = [
    ({"cache-control": "max-age=10"}, "cache-control", 10),
    ({"cache-control": "max-age=10", "cdn-cache-control": "max-age=20"}, "cdn-cache-control", 20),
    ({"cache-control": "max-age=10", "cdn-cache-control": "max-age=20",
      "edge360-cache-control": "max-age=30"}, "edge360-cache-control", 30),
    ({"cache-control": "max-age=10", "cdn-cache-control": "Max-Age=20"}, "cache-control", 10),
    ({"cache-control": "max-age=10", "cdn-cache-control": "max-age=20",
      "edge360-cache-control": "bad value!"}, "cdn-cache-control", 20),
    ({"cache-control": "max-age=10", "cdn-cache-control": ""}, "cache-control", 10),
    ({"cache-control": "max-age=10", "cdn-cache-control": "no-store"}, "cdn-cache-control", None),
    ({}, "", None),
]


@pytest.mark.parametrize(("headers", "source", "max_age"), PRECEDENCE_CASES)
def test_targeted_precedence(headers: dict[str, str], source: str, max_age: int | None) -> None:
    d = cache_directives(headers)
    assert d.source == source
    assert d.delta("max-age") == max_age


def test_response_pragma_is_ignored() -> None:
    assert cache_directives({"pragma": "no-cache"}).names == frozenset()


@pytest.mark.parametrize(("headers", "names"), [
    ({"pragma": "no-cache"}, {"no-cache"}),
    ({"pragma": "No-Cache"}, {"no-cache"}),
    ({"pragma": "foo"}, set()),
    ({"pragma": "no-cache", "cache-control": "max-age=5"}, {"max-age"}),  # CC wins
    ({"pragma": "no-cache", "cache-control": ""}, {"no-cache"}),
    ({"cache-control": "only-if-cached, max-stale"}, {"only-if-cached", "max-stale"}),
    ({}, set()),
])
def test_request_directives(headers: dict[str, str], names: set[str]) -> None:
    assert request_directives(headers).names == names


@pytest.mark.parametrize(("raw", "expected"), [
    (None, 0), ("0", 0), ("100", 100), (" 100 ", 100), ("100, 200", 100), ("200,100", 200),
    ("-1", 0), ("1.5", 0), ("abc", 0), ("", 0), ("7200a", 0), ("+5", 0),
    ("2147483648", MAX_DELTA), ("99999999999999999999", MAX_DELTA), ("abc, 100", 0),
])
def test_age_value(raw: str | None, expected: int) -> None:
    headers = {} if raw is None else {"age": raw}
    assert age_value(headers) == expected


IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
EPOCH_1994 = 784111777.0


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    (IMF, EPOCH_1994),
    ("Sunday, 06-Nov-94 08:49:37 GMT", EPOCH_1994),  # rfc850
    ("Sun Nov  6 08:49:37 1994", EPOCH_1994),  # asctime
    ("0", 0.0), ("-1", 0.0), ("", 0.0), ("tomorrow", 0.0),  # §5.3: invalid = in the past
    (f"{IMF}, {IMF}", 0.0),  # two Expires lines joined: invalid, so stale
    ("Sun, 32 Nov 1994 08:49:37 GMT", 0.0),
])
def test_expires_value(raw: str | None, expected: float | None) -> None:
    headers = {} if raw is None else {"expires": raw}
    assert expires_value(headers) == expected


def test_date_and_last_modified() -> None:
    assert date_value({"date": IMF}) == EPOCH_1994
    assert date_value({"date": "garbage"}) is None
    assert date_value({}) is None
    assert last_modified_value({"last-modified": IMF}) == EPOCH_1994
    assert last_modified_value({"last-modified": "0"}) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("a, b", ["a", "b"]), ("a,,b,", ["a", "b"]), ('"x, y", z', ['"x, y"', "z"]), ("", []),
    ("  a  ", ["a"]), ('W/"1", "2"', ['W/"1"', '"2"']),
])
def test_split_list(value: str, expected: list[str]) -> None:
    assert split_list(value) == expected


@pytest.mark.parametrize(("vary", "expected"), [
    (None, ()), ("", ()), ("Accept-Encoding", ("accept-encoding",)),
    ("Foo, bar, FOO", ("bar", "foo")), ("*", None), ("Foo, *", None), (" , foo,", ("foo",)),
])
def test_vary_fields(vary: str | None, expected: tuple[str, ...] | None) -> None:
    assert vary_fields(vary) == expected


# (vary, request a, request b, same key expected)
VARY_CASES = [
    ("Foo", {"foo": "1"}, {"foo": "1"}, True),
    ("Foo", {"foo": "1"}, {"foo": "2"}, False),
    ("Foo", {"foo": "1"}, {}, False),
    ("Foo", {}, {}, True),
    ("Foo", {"foo": ""}, {}, False),  # present but empty differs from absent
    ("Foo", {"foo": "1, 2"}, {"foo": "1,2"}, True),  # OWS around list commas
    ("Foo", {"foo": "1, 2"}, {"foo": "2, 1"}, False),  # order is kept: it may matter
    ("Foo", {"foo": "a"}, {"foo": "A"}, False),  # values are case-sensitive by default
    ("Accept-Encoding", {"accept-encoding": "GZIP"}, {"accept-encoding": "gzip"}, True),
    ("Foo, Bar", {"foo": "1", "bar": "2"}, {"foo": "1", "bar": "2", "baz": "x"}, True),
    ("Foo, Bar", {"foo": "1", "bar": "2"}, {"foo": "1", "bar": "3"}, False),
    ("Foo, Bar", {"foo": "1", "bar": "2"}, {"foo": "1"}, False),
    ("Bar, Foo", {"foo": "1", "bar": "2"}, {"bar": "2", "foo": "1"}, True),
    ("", {"foo": "1"}, {"foo": "2"}, True),
]


@pytest.mark.parametrize(("vary", "a", "b", "same"), VARY_CASES)
def test_vary_key(vary: str, a: dict[str, str], b: dict[str, str], same: bool) -> None:
    assert (vary_key(vary, a) == vary_key(vary, b)) is same


def test_vary_star_never_matches() -> None:
    assert vary_key("*", {}) is None
    assert vary_key("Foo, *", {"foo": "1"}) is None
    assert vary_key(None, {"foo": "1"}) == ""


def test_vary_key_is_unambiguous() -> None:
    # one field holding what looks like two must not collide with two fields
    assert vary_key("a, b", {"a": "1", "b": "2"}) != vary_key("a", {"a": "1\nb=2"})


def test_downstream_headers() -> None:
    headers = {"cache-control": "max-age=1", "cdn-cache-control": "max-age=60",
               "edge360-cache-control": "max-age=600", "etag": '"x"'}
    out = downstream_headers(headers)
    assert "edge360-cache-control" not in out
    assert out["cdn-cache-control"] == "max-age=60"  # RFC 9213: may pass on
    assert out["cache-control"] == "max-age=1"
    assert downstream_headers(headers, to_peer=True) == headers


def test_empty_directives() -> None:
    d = Directives()
    assert not d.has("max-age") and d.delta("max-age") is None and not d.targeted


# --- properties -------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    "max-age", "s-maxage", "no-cache", "no-store", "private", "public", "=", ",", " ", '"', "\\",
    "1", "0", "-", "3600", "(", ")", ";", "?1", ":", "Max-Age", "stale-while-revalidate", "a"])
_HEADER_TEXT = st.one_of(st.text(max_size=60), st.lists(_FRAGMENTS, max_size=20).map("".join))


@given(_HEADER_TEXT)
def test_parsers_never_raise(value: str) -> None:
    d = parse_cache_control(value)
    assert all(v >= 0 for v in d.deltas.values())
    assert not set(d.deltas) & d.invalid
    t = parse_targeted(value)
    assert t is None or all(0 <= v <= MAX_DELTA for v in t.deltas.values())
    headers = {"cache-control": value, "cdn-cache-control": value, "age": value,
               "expires": value, "vary": value, "pragma": value, "foo": value}
    cache_directives(headers)
    request_directives(headers)
    assert 0 <= age_value(headers) <= MAX_DELTA
    assert expires_value(headers) is not None
    split_list(value)
    vary_key(value, headers)


@given(st.lists(st.tuples(st.sampled_from(["max-age", "s-maxage", "public", "no-cache"]),
                          st.integers(0, 10**12)), min_size=1, max_size=5))
def test_delta_values_are_capped(pairs: list[tuple[str, int]]) -> None:
    d = parse_cache_control(", ".join(f"{n}={v}" for n, v in pairs))
    assert all(0 <= v <= MAX_DELTA for v in d.deltas.values())


@given(st.lists(st.text(alphabet="abc12 ", max_size=5), min_size=1, max_size=4))
def test_vary_key_ignores_list_whitespace(members: list[str]) -> None:
    tight = ",".join(m.strip() for m in members)
    loose = " ,  ".join(members)
    assert vary_key("X", {"x": tight}) == vary_key("X", {"x": loose})
