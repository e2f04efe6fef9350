"""Byte ranges (RFC 9110 §14): parse a Range header into a plan, and lay out 206 answers.

A plan is a value the handlers match on: FULL (send 200 with everything), one ByteRange (206
with Content-Range) or Multi (206 multipart/byteranges). Unsatisfiable requests raise
RangeNotSatisfiable, which carries `Content-Range: bytes */LEN` for the 416 answer. The rules
keep the cost of any Range header at or below one full response: overlapping ranges are coalesced,
and too many ranges are ignored (§14.2 lets a server ignore a Range header at will).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias, final

from edge360.core.errors import RangeNotSatisfiable

# Any number with more digits than this is larger than any length we can hold (2**63 has 19 digits),
# so it is capped instead of converted: the value is only ever compared, never allocated by.
_MAX_DIGITS: Final = 20
_HUGE: Final = 10**_MAX_DIGITS


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range `start`-`end`, already resolved against a representation length."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@final
class Full:
    """The whole representation with 200: the Range header is absent, invalid or ignored."""

    __slots__ = ()
    _instance: ClassVar[Full | None] = None

    def __new__(cls) -> Full:
        # A singleton, so `plan is FULL` and `case Full():` both work.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FULL"


FULL: Final = Full()


@dataclass(frozen=True, slots=True)
class Multi:
    """Two or more disjoint, non-adjacent ranges in ascending order: a multipart/byteranges."""

    ranges: tuple[ByteRange, ...]


RangePlan: TypeAlias = Full | ByteRange | Multi

# RFC 9110 §14.1.1: range-spec = int-range / suffix-range; digits are ASCII only (int() would
# accept other scripts' digits and underscores, so the grammar is checked first).
_SPEC_RE: Final = re.compile(r"([0-9]*)-([0-9]*)")
_UNIT_RE: Final = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(.*)", re.DOTALL)
_CONTENT_RANGE_RE: Final = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([0-9]+)-([0-9]+)/"
                                      r"([0-9]+|\*)[ \t]*")
# RFC 2046 §5.1.1: a boundary is 1-70 bchars, not ending in a space.
_BOUNDARY_RE: Final = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")


def _number(digits: str) -> int:
    """A decimal of any length as an int, capped at _HUGE (ordering among huge values is kept
    by the caller comparing the digit strings)."""
    stripped = digits.lstrip("0")
    if len(stripped) > _MAX_DIGITS:
        return _HUGE
    return int(stripped or "0")


def _less(a: str, b: str) -> bool:
    """a < b for decimal digit strings of any length, without converting them."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def _parse_specs(header: str) -> list[tuple[int | None, int | None]] | None:
    """The range-specs of a bytes Range header as (first, last) with None for an omitted side,
    or None when the header is not valid `bytes=` syntax (§14.1.1)."""
    m = _UNIT_RE.fullmatch(header)
    if m is None or m.group(1).lower() != "bytes":  # range units are case-insensitive (§14.1)
        return None
    specs: list[tuple[int | None, int | None]] = []
    # range-set is a 1#list: OWS around commas, empty elements allowed (§5.6.1).
    for raw in m.group(2).split(","):
        element = raw.strip(" \t")
        if not element:
            continue
        s = _SPEC_RE.fullmatch(element)
        if s is None:
            return None
        first, last = s.group(1), s.group(2)
        if not first and not last:
            return None  # "-" alone is neither int-range nor suffix-range
        if first and last and _less(last, first):
            return None  # §14.1.1: last-pos < first-pos makes the whole set invalid
        specs.append((_number(first) if first else None, _number(last) if last else None))
    return specs or None


def _satisfiable(spec: tuple[int | None, int | None], length: int) -> ByteRange | None:
    """Resolve one range-spec against `length` (§14.1.1), or None when it is unsatisfiable."""
    first, last = spec
    if first is None:
        assert last is not None
        # suffix-range: the last N bytes; "-0" selects nothing (§14.1.3).
        if last == 0 or length == 0:
            return None
        return ByteRange(max(0, length - last), length - 1)
    if first >= length:
        return None
    end = length - 1 if last is None else min(last, length - 1)
    return ByteRange(first, end)


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Sort and merge overlapping or adjacent ranges (§14.2 allows coalescing)."""
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].end + 1:
            if r.end > merged[-1].end:
                merged[-1] = ByteRange(merged[-1].start, r.end)
        else:
            merged.append(r)
    return merged


def resolve_range(header: str | None, length: int, *, max_ranges: int = 16) -> RangePlan:
    """The plan for answering a request with this Range header for a representation of `length`.

    Absent, invalid or non-bytes headers, and more than `max_ranges` range-specs, give FULL
    (§14.2: a server MAY ignore Range). No satisfiable range raises RangeNotSatisfiable (§15.5.17).
    Several ranges are coalesced; one left gives a ByteRange; ranges that together cover the whole
    representation give FULL; otherwise Multi.
    """
    if length < 0:
        raise ValueError("length must be >= 0")
    if not header:
        return FULL
    specs = _parse_specs(header)
    if specs is None or len(specs) > max_ranges:
        return FULL
    resolved = [r for r in (_satisfiable(s, length) for s in specs) if r is not None]
    if not resolved:
        raise RangeNotSatisfiable(length)
    if len(resolved) == 1:
        return resolved[0]
    merged = _coalesce(resolved)
    if len(merged) == 1:
        whole = merged[0].start == 0 and merged[0].end == length - 1
        # Several specs adding up to everything: a plain 200 is the cheapest honest answer.
        return FULL if whole else merged[0]
    return Multi(tuple(merged))


def content_range(r: ByteRange, length: int) -> str:
    """The Content-Range value of a 206 part (§14.4), e.g. "bytes 0-99/1000"."""
    return f"bytes {r.start}-{r.end}/{length}"


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """(first, last, complete length or None for "*") from a Content-Range value, or None when
    it is not a valid satisfied byte range (§14.4: last < first or length <= last is invalid)."""
    m = _CONTENT_RANGE_RE.fullmatch(value)
    if m is None or m.group(1).lower() != "bytes":
        return None
    if max(len(g.lstrip("0")) for g in m.group(2, 3, 4)) > _MAX_DIGITS:
        return None  # beyond any length we could hold; refuse rather than trust it
    first, last = int(m.group(2)), int(m.group(3))
    complete = None if m.group(4) == "*" else int(m.group(4))
    if last < first or (complete is not None and complete <= last):
        return None
    return first, last, complete


def multipart_layout(plan: Multi, length: int, content_type: str,
                     boundary: str) -> tuple[list[bytes | ByteRange], int]:
    """The body of a multipart/byteranges answer (§14.6, RFC 2046 §5.1) and its exact length.

    The list holds literal delimiter/header chunks and the ByteRanges whose bytes the caller copies
    in between them, ending with the close delimiter. The Content-Type of the response is
    `multipart/byteranges; boundary=<boundary>`.
    """
    if _BOUNDARY_RE.fullmatch(boundary) is None:
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    if any(c in content_type for c in "\r\n\x00"):
        raise ValueError("content type must be a single header line")
    parts: list[bytes | ByteRange] = []
    total = 0
    for i, r in enumerate(plan.ranges):
        # The first delimiter opens the body; later ones need the CRLF that ends the prior part.
        opening = "" if i == 0 else "\r\n"
        head = (f"{opening}--{boundary}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Range: {content_range(r, length)}\r\n\r\n").encode("latin-1")
        parts.append(head)
        parts.append(r)
        total += len(head) + r.length
    tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
    parts.append(tail)
    total += len(tail)
    return parts, total
