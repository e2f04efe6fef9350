"""What to send for one selected representation: the one plan both roles and every path follow
(RFC 9110 §13 preconditions, §13.1.5 If-Range, §14 ranges, §9.3.2 HEAD).

`plan()` takes the request's fields (lower-cased names, repeated fields comma-joined) and the
representation's length and validators, and returns a Plan: the status (200, 206 or 304) and the
body as a layout of byte ranges of the representation and literal bytes (multipart delimiters).
A precondition that fails raises PreconditionFailed (412); an unsatisfiable range raises
RangeNotSatisfiable (416, carrying `Content-Range: bytes */LEN`). The content plane only writes
the plan out: where the bytes come from (memory, a file, pieces, a flight) is its business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from edge360.core.conditional import Outcome, evaluate_preconditions, if_range_matches
from edge360.core.errors import PreconditionFailed
from edge360.core.ranges import ByteRange, Multi, content_range, multipart_layout, resolve_range

#: the request fields that make a request conditional (RFC 9110 §13.1)
CONDITIONAL: Final = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
#: response fields a 304 repeats (RFC 9110 §15.4.5), besides CORS and X-Cache
NOT_MODIFIED_FIELDS: Final = frozenset({
    "cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified",
    "age", "x-cache", "via"})

Part = bytes | ByteRange


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer to write: `status`, the body `parts` (ranges of the representation and literal
    bytes, in order) and their total `length`; `content_range` for a single 206, `content_type`
    replaces the representation's for a multipart answer. `send_body` is False for HEAD and 304."""

    status: int
    parts: tuple[Part, ...]
    length: int
    content_range: str | None = None
    content_type: str | None = None
    send_body: bool = True


NOT_MODIFIED: Final = Plan(304, (), 0, send_body=False)


def is_conditional(fields: Mapping[str, str]) -> bool:
    """Whether the request carries any precondition field."""
    return ("if-none-match" in fields or "if-modified-since" in fields
            or "if-match" in fields or "if-unmodified-since" in fields)


#: whole-representation plans by (status, length, head): plans are immutable, so one serves all
_WHOLE: dict[tuple[int, int, bool], Plan] = {}
_MAX_WHOLE = 65_536


def whole(length: int, *, head: bool = False, status: int = 200) -> Plan:
    """The whole representation (no range honoured)."""
    key = (status, length, head)
    found = _WHOLE.get(key)
    if found is None:
        parts: tuple[Part, ...] = (ByteRange(0, length - 1),) if length else ()
        found = Plan(status, parts, length, send_body=not head)
        if len(_WHOLE) >= _MAX_WHOLE:
            _WHOLE.clear()
        _WHOLE[key] = found
    return found


def plan(method: str, fields: Mapping[str, str], *, length: int, etag: str | None,
         last_modified: float | None, max_ranges: int, content_type: str,
         boundary: Callable[[], str], status: int = 200, conditional: bool = True) -> Plan:
    """The plan for `method` on a representation of `length` bytes (see the module docstring).

    Preconditions and ranges apply to a 200 representation only (a stored 404 is sent as it is);
    `conditional=False` skips the preconditions (a caller that evaluated them already).
    `boundary()` is called only for a multipart answer."""
    head = method == "HEAD"
    if status != 200:
        return whole(length, head=head, status=status)
    if conditional and is_conditional(fields):
        outcome = evaluate_preconditions(method, fields, etag, last_modified)
        if outcome is Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed("precondition failed")
        if outcome is Outcome.NOT_MODIFIED:
            return NOT_MODIFIED
    header = fields.get("range")
    if header is None or method not in ("GET", "HEAD") or not if_range_matches(
            fields.get("if-range"), etag, last_modified):
        return whole(length, head=head)
    resolved = resolve_range(header, length, max_ranges=max_ranges)
    if isinstance(resolved, ByteRange):
        return Plan(206, (resolved,), resolved.length,
                    content_range=content_range(resolved, length), send_body=not head)
    if isinstance(resolved, Multi):
        mark = boundary()
        layout, total = multipart_layout(resolved, length, content_type, mark)
        return Plan(206, tuple(layout), total,
                    content_type=f"multipart/byteranges; boundary={mark}", send_body=not head)
    return whole(length, head=head)


def pieces_needed(p: Plan, piece_bytes: int) -> list[int]:
    """The indexes of the pieces of `piece_bytes` that the plan's body reads, in order."""
    if not p.send_body:
        return []
    seen: dict[int, None] = {}
    for part in p.parts:
        if isinstance(part, ByteRange):
            for n in range(part.start // piece_bytes, part.end // piece_bytes + 1):
                seen[n] = None
    return list(seen)
