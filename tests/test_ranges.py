"""Tests for edge360.ranges: Range resolution (RFC 9110 §14.1-14.2), Content-Range, multipart."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import RangeNotSatisfiable
from edge360.core.ranges import (
    FULL,
    ByteRange,
    Full,
    Multi,
    RangePlan,
    content_range,
    multipart_layout,
    parse_content_range,
    resolve_range,
)

CT = "video/mp2t"
BOUNDARY = "edge360-" + "b" * 62  # the longest boundary RFC 2046 allows (70)


@pytest.mark.parametrize(("header", "length", "plan"), [
    # first-last, clamped to the end
    ("bytes=0-99", 1000, ByteRange(0, 99)),
    ("bytes=10-10", 1000, ByteRange(10, 10)),
    ("bytes=990-2000", 1000, ByteRange(990, 999)),
    ("bytes=0-999", 1000, ByteRange(0, 999)),
    ("bytes=0-" + "9" * 40, 1000, ByteRange(0, 999)),
    # open-ended
    ("bytes=500-", 1000, ByteRange(500, 999)),
    ("bytes=0-", 1000, ByteRange(0, 999)),
    ("bytes=999-", 1000, ByteRange(999, 999)),
    # suffix
    ("bytes=-1", 1000, ByteRange(999, 999)),
    ("bytes=-100", 1000, ByteRange(900, 999)),
    ("bytes=-5000", 1000, ByteRange(0, 999)),
    ("bytes=-" + "9" * 40, 1000, ByteRange(0, 999)),
    # unit is case-insensitive, whitespace around commas and empty list elements tolerated
    ("BYTES=0-1", 10, ByteRange(0, 1)),
    ("bytes=0-1 ,  , 5-6", 10, Multi((ByteRange(0, 1), ByteRange(5, 6)))),
    ("bytes=,0-1,", 10, ByteRange(0, 1)),
    # unsatisfiable specs are dropped when another is satisfiable
    ("bytes=5000-6000, 0-9", 1000, ByteRange(0, 9)),
    ("bytes=-0, 3-4", 10, ByteRange(3, 4)),
    # coalescing: overlapping and adjacent become one; order does not matter
    ("bytes=0-10, 5-20", 1000, ByteRange(0, 20)),
    ("bytes=0-9, 10-19", 1000, ByteRange(0, 19)),
    ("bytes=50-59, 0-9", 1000, Multi((ByteRange(0, 9), ByteRange(50, 59)))),
    ("bytes=0-9, 20-29, 5-24", 1000, ByteRange(0, 29)),
    ("bytes=0-0, 2-2, 4-4", 10, Multi((ByteRange(0, 0), ByteRange(2, 2), ByteRange(4, 4)))),
    ("bytes=0-1, 1-2, 8-9", 10, Multi((ByteRange(0, 2), ByteRange(8, 9)))),
    # several specs that together are the whole representation: a plain 200
    ("bytes=0-499, 500-", 1000, FULL),
    ("bytes=0-, -1", 1000, FULL),
    # a single spec covering everything still is a 206 of everything
    ("bytes=0-", 1, ByteRange(0, 0)),
])
def test_resolve_table(header: str, length: int, plan: RangePlan) -> None:
    assert resolve_range(header, length) == plan


@pytest.mark.parametrize("header", [
    None, "", "bytes", "bytes=", "bytes=,", "bytes=-", "bytes=abc", "bytes=5-3", "bytes=0-1,5-3",
    "bytes=1-2-3", "bytes=--1", "bytes=+1-2", "bytes=1.5-2", "bytes=0x10-20", "bytes=١-٢",
    "bytes=1_0-20", "items=0-1", "bytes 0-1", "bytes= 0-1;", "bytes=0-1,abc", "=0-1",
    "bytes=" + "9" * 41 + "-" + "9" * 40,  # first > last with huge numbers is still invalid
])
def test_invalid_headers_are_ignored(header: str | None) -> None:
    assert resolve_range(header, 1000) is FULL


@pytest.mark.parametrize(("header", "length"), [
    ("bytes=1000-", 1000),
    ("bytes=1000-2000", 1000),
    ("bytes=-0", 1000),
    ("bytes=" + "9" * 40 + "-", 1000),
    ("bytes=0-0", 0),
    ("bytes=-1", 0),
    ("bytes=0-", 0),
    ("bytes=5000-, -0, 1000-1000", 1000),
])
def test_unsatisfiable(header: str, length: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        resolve_range(header, length)
    assert info.value.status == 416
    assert info.value.headers["Content-Range"] == f"bytes */{length}"


def test_full_is_a_singleton() -> None:
    assert Full() is FULL
    assert repr(FULL) == "FULL"


def test_too_many_ranges_are_ignored() -> None:
    thousand = "bytes=" + ", ".join(f"{i * 2}-{i * 2}" for i in range(1000))
    assert resolve_range(thousand, 10**6) is FULL
    sixteen = "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(16))
    plan = resolve_range(sixteen, 10**6)
    assert isinstance(plan, Multi)
    assert len(plan.ranges) == 16
    seventeen = "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(17))
    assert resolve_range(seventeen, 10**6) is FULL
    assert isinstance(resolve_range(seventeen, 10**6, max_ranges=17), Multi)


def test_overlapping_abuse_costs_at_most_one_copy() -> None:
    # The classic "bytes=0-,0-,0-,..." amplification: one full response at most.
    header = "bytes=" + ",".join(["0-"] * 16)
    assert resolve_range(header, 10**6) is FULL
    header = "bytes=" + ",".join(["1-"] * 16)
    assert resolve_range(header, 10**6) == ByteRange(1, 10**6 - 1)


def test_negative_length_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="length"):
        resolve_range("bytes=0-1", -1)


def test_byte_range_length() -> None:
    assert ByteRange(0, 0).length == 1
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize(("value", "parsed"), [
    ("bytes 0-99/1000", (0, 99, 1000)),
    ("bytes 0-99/*", (0, 99, None)),
    ("BYTES 5-5/6", (5, 5, 6)),
    (" bytes 0-0/1 ", (0, 0, 1)),
    ("bytes 0-99/99", None),  # complete length must exceed last-pos (§14.4)
    ("bytes 10-9/100", None),
    ("bytes */1000", None),
    ("bytes 0-99", None),
    ("bytes=0-99/1000", None),
    ("items 0-99/1000", None),
    ("bytes 0-99/1000x", None),
    ("bytes -1-99/1000", None),
    ("bytes ١-٢/٣", None),
    ("bytes 0-" + "9" * 30 + "/*", None),
    ("", None),
])
def test_parse_content_range(value: str, parsed: tuple[int, int, int | None] | None) -> None:
    assert parse_content_range(value) == parsed


def test_content_range_format() -> None:
    assert content_range(ByteRange(0, 99), 1000) == "bytes 0-99/1000"


@given(st.integers(0, 2**63), st.integers(0, 2**63), st.integers(1, 2**63))
def test_content_range_round_trip(a: int, b: int, extra: int) -> None:
    start, end = min(a, b), max(a, b)
    length = end + extra
    assert parse_content_range(content_range(ByteRange(start, end), length)) == (start, end, length)


def _apply(plan: RangePlan, body: bytes) -> bytes:
    """What a client receives, concatenated, when the server follows `plan`."""
    if isinstance(plan, Full):
        return body
    if isinstance(plan, ByteRange):
        return body[plan.start:plan.end + 1]
    return b"".join(body[r.start:r.end + 1] for r in plan.ranges)


def _reference(header: str, length: int) -> set[int] | None:
    """The byte offsets a bytes=... header selects, by brute force over a small length."""
    specs = header.removeprefix("bytes=").split(",")
    chosen: set[int] = set()
    for spec in specs:
        first, last = spec.strip().split("-")
        if not first:
            chosen |= set(range(max(0, length - int(last)), length)) if int(last) else set()
        else:
            stop = length if not last else min(int(last) + 1, length)
            chosen |= set(range(int(first), stop))
    return chosen


def _spec() -> st.SearchStrategy[str]:
    n = st.integers(0, 40)
    return st.one_of(
        st.tuples(n, n).map(lambda t: f"{min(t)}-{max(t)}"),
        n.map(lambda a: f"{a}-"),
        n.map(lambda a: f"-{a}"),
    )


@given(st.lists(_spec(), min_size=1, max_size=20), st.integers(0, 30))
def test_plan_selects_exactly_the_requested_bytes(specs: list[str], length: int) -> None:
    header = "bytes=" + ", ".join(specs)
    body = bytes(range(length))
    expected = _reference(header, length)
    if len(specs) > 16:
        # too many ranges: ignored before they are even resolved (§14.2)
        assert resolve_range(header, length) is FULL
        return
    try:
        plan = resolve_range(header, length)
    except RangeNotSatisfiable:
        assert not expected
        return
    assert expected
    got = _apply(plan, body)
    if plan is FULL:
        assert expected == set(range(length))
    else:
        # ranges ascend without overlap, so the bytes received are the sorted selection
        assert got == bytes(sorted(expected))


def _check_bounded(plan: RangePlan, length: int) -> None:
    ranges = [plan] if isinstance(plan, ByteRange) else list(getattr(plan, "ranges", ()))
    for r in ranges:
        assert 0 <= r.start <= r.end < length
    if isinstance(plan, Multi):
        assert len(plan.ranges) >= 2
        assert all(a.end + 1 < b.start for a, b in zip(plan.ranges, plan.ranges[1:], strict=False))
        _, total = multipart_layout(plan, length, CT, BOUNDARY)
        assert total <= length + len(plan.ranges) * (200 + len(CT)) + 100


@given(st.text(), st.integers(0, 2**63))
def test_any_header_text_is_bounded(header: str, length: int) -> None:
    try:
        plan = resolve_range(header, length)
    except RangeNotSatisfiable as e:
        assert e.headers["Content-Range"] == f"bytes */{length}"
        return
    _check_bounded(plan, length)


@given(st.lists(st.one_of(_spec(), st.integers(0, 2**64).map(lambda a: f"{a}-"),
                          st.integers(0, 2**64).map(lambda a: f"-{a}")), min_size=1, max_size=40),
       st.integers(0, 2**63))
def test_any_range_set_is_bounded(specs: list[str], length: int) -> None:
    try:
        plan = resolve_range("bytes=" + ",".join(specs), length)
    except RangeNotSatisfiable:
        return
    _check_bounded(plan, length)


def test_multipart_layout_parses_back() -> None:
    body = bytes(range(256)) * 4
    plan = resolve_range("bytes=0-9, 100-109, -5", len(body))
    assert isinstance(plan, Multi)
    parts, total = multipart_layout(plan, len(body), CT, BOUNDARY)
    assert isinstance(parts[-1], bytes)
    wire = b"".join(p if isinstance(p, bytes) else body[p.start:p.end + 1] for p in parts)
    assert len(wire) == total
    head = f"Content-Type: multipart/byteranges; boundary={BOUNDARY}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + wire)
    assert msg.is_multipart()
    got = [(p["Content-Type"], p["Content-Range"], p.get_payload(decode=True))
           for p in msg.iter_parts()]
    assert got == [
        (CT, "bytes 0-9/1024", body[0:10]),
        (CT, "bytes 100-109/1024", body[100:110]),
        (CT, "bytes 1019-1023/1024", body[1019:]),
    ]
    assert wire.startswith(f"--{BOUNDARY}\r\n".encode())
    assert wire.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())


@pytest.mark.parametrize(("content_type", "boundary"), [
    (CT, ""), (CT, "x" * 71), (CT, "ends-in-space "), (CT, "semi;colon"), (CT, "new\nline"),
    ("video/mp2t\r\nX-Evil: 1", "ok"),
])
def test_multipart_layout_refuses_bad_input(content_type: str, boundary: str) -> None:
    plan = Multi((ByteRange(0, 0), ByteRange(2, 2)))
    with pytest.raises(ValueError):
        multipart_layout(plan, 10, content_type, boundary)
