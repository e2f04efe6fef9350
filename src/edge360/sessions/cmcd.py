"""CMCD as players send it (CTA-5004): the key/value scanner, and the playback keys the session
rule reads (docs/SESSIONS.md).

A player sends CMCD either as one `CMCD` query parameter or as four header fields grouped by how
often their keys change (CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session; CTA-5004 §2). Each
is a comma-separated list of `key[=value]`: a key without a value is a boolean true, a String is a
double-quoted string in which \\" and \\\\ are escaped, numbers and tokens are bare (§3). The
scanner is lenient about blanks (players differ) and stops at the first malformed member, keeping
what came before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_PAIR_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)')
_INT_RE = re.compile(r"[0-9]{1,9}")
_DEC_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
#: the largest playback rate believed (CTA-5004 §3.3 `pr`: 1 is real time, 0 not playing)
MAX_RATE = 100.0
#: object types (`ot`, CTA-5004 §3.3): m manifest, a audio, v video, av muxed, i init segment,
#: c caption, tt timed text, k key, o other
OBJECT_TYPES = frozenset({"m", "a", "v", "av", "i", "c", "tt", "k", "o"})


def pairs(value: str | None) -> Iterator[tuple[str, str | None]]:
    """(key, raw value or None) of each member, in order, up to the first malformed one."""
    if not value:
        return
    pos = 0
    while pos < len(value):
        m = _PAIR_RE.match(value, pos)
        if m is None or m.end() == pos:
            return
        raw = m.group(2)
        yield m.group(1), None if raw is None else raw.strip()
        pos = m.end()


def _first(raw: str | None) -> str | None:
    """A number as CMCD version 2 may send it, as an inner list (`bl=(21300)`, one value per
    object or track): its first member; a bare value as it is."""
    if raw is None or not raw.startswith("("):
        return raw
    inner = raw[1:].split(")", 1)[0].split()
    return inner[0].split(";", 1)[0] if inner else ""


def string(raw: str | None) -> str | None:
    """A String value (CTA-5004 §3.3: only the quoted form is one), unescaped; None otherwise."""
    if raw is None or len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return None
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


@dataclass(frozen=True, slots=True)
class Playback:
    """What one request's CMCD says about playback. Absent keys are None / False."""

    bl: float | None = None  # buffer length at the request, seconds (sent in ms)
    pr: float | None = None  # playback rate: 1 real time, 0 not playing
    su: bool = False  # startup: needed urgently (start, seek, recovery after an empty buffer)
    bs: bool = False  # the buffer starved since the previous request
    ot: str | None = None  # object type

    def wire(self) -> list[object]:
        """A JSON-able form for the worker hub (`from_wire` reads it back)."""
        return [self.bl, self.pr, self.su, self.bs, self.ot]

    @classmethod
    def from_wire(cls, data: object) -> Playback | None:
        if not isinstance(data, list) or len(data) != 5:
            return None
        bl, pr, su, bs, ot = data
        return cls(bl=float(bl) if isinstance(bl, int | float) else None,
                   pr=float(pr) if isinstance(pr, int | float) else None,
                   su=su is True, bs=bs is True, ot=ot if ot in OBJECT_TYPES else None)


def playback(*values: str | None) -> Playback | None:
    """The playback keys of a request's CMCD: the query value and the header fields, in any
    order (a key found earlier wins). None when none of them carries a key the rule reads, so a
    request without CMCD costs one truth test per value. Values out of range are ignored."""
    if not any(values):
        return None
    bl = pr = ot = None
    su = bs = False
    seen = False
    for value in values:
        for key, found in pairs(value):
            raw = _first(found)
            if key == "bl" and bl is None and raw is not None and _INT_RE.fullmatch(raw):
                bl = int(raw) / 1000.0  # milliseconds, rounded to 100 ms by the player
            elif key == "pr" and pr is None and raw is not None and _DEC_RE.fullmatch(raw):
                rate = float(raw)
                pr = rate if rate <= MAX_RATE else None
            elif key == "su":
                su = su or raw is None or raw == "?1"
            elif key == "bs":
                bs = bs or raw is None or raw == "?1"
            elif key == "ot" and ot is None and raw in OBJECT_TYPES:
                ot = raw
            else:
                continue
            seen = True
    if not seen:
        return None
    return Playback(bl=bl, pr=pr, su=su, bs=bs, ot=ot)
