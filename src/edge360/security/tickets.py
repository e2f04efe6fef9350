"""Admission tickets: the signed note a viewer carries that says it was admitted, or where it
stands in a node's queue (docs/OVERLOAD.md, "Tickets").

A ticket is nine dot-separated fields, each in the URL-safe alphabet [A-Za-z0-9_-], so it needs
no escaping in a query string (RFC 3986 §3.4) nor in a cookie value (RFC 6265 §4.1.1):

    t1.<kid>.<kind>.<sid>.<epoch>.<number>.<since>.<exp>.<mac>

    kind    "a": admitted (bound to `sid`); "q": queued (no sid yet)
    sid     the session id an admitted ticket belongs to; empty for a queued one
    epoch   the queue a queued ticket's number belongs to (one node's run); empty when admitted
    number  the place in that queue (decimal); 0 when admitted
    since   unix seconds: when the viewer was first queued, or admitted
    exp     unix seconds the ticket is valid until (inclusive)
    mac     HMAC-SHA256 (RFC 2104) over "t1\\n<kid>\\n<kind>\\n<sid>\\n<epoch>\\n<number>\\n
            <since>\\n<exp>" keyed with the secret, cut to its first 16 bytes (RFC 2104 §5 allows
            a truncated output of at least half the hash), base64url without padding

Keys are the signing keys' format (security.tokens.parse_keys), from EDGE360_ADMISSION_KEYS or
the file EDGE360_ADMISSION_KEYS_FILE names: the first signs, all verify, so a fleet rotates them
as it rotates its token keys. A ticket is never state on a server: whoever holds the keys can
check it anywhere in the fleet. Pure: `now` is a parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edge360.config.schema import Config
from edge360.core.errors import ConfigError
from edge360.core.storedfields import TICKET_COOKIE
from edge360.security.keyset import read_key_file
from edge360.security.tokens import Key, parse_keys

VERSION = "t1"
#: a ticket longer than this is refused before it is split
MAX_TICKET = 256
#: bytes of the HMAC kept (RFC 2104 §5: at least half of SHA-256's 32)
MAC_BYTES = 16
#: the cookie a refused browser keeps its queue ticket in
COOKIE = TICKET_COOKIE
_FIELD = re.compile(r"[A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[0-9]{1,15}")
_SID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")

Kind = Literal["a", "q"]


@dataclass(frozen=True, slots=True)
class Ticket:
    kind: Kind
    sid: str
    epoch: str
    number: int
    since: int
    expires: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _canonical(kid: str, t: Ticket) -> bytes:
    return (f"{VERSION}\n{kid}\n{t.kind}\n{t.sid}\n{t.epoch}\n{t.number}\n{t.since}\n"
            f"{t.expires}").encode()


def _mac(secret: bytes, message: bytes) -> str:
    return _b64(hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES])


def mint(keys: Sequence[Key], t: Ticket) -> str:
    """The ticket `t` signed with the first key."""
    key = keys[0]
    return ".".join((VERSION, key.kid, t.kind, t.sid, t.epoch, str(t.number), str(t.since),
                     str(t.expires), _mac(key.secret, _canonical(key.kid, t))))


def admitted(keys: Sequence[Key], sid: str, now: float, ttl: float) -> str:
    """An admitted ticket for session `sid`, valid `ttl` seconds from `now`."""
    return mint(keys, Ticket("a", sid, "", 0, int(now), int(now + ttl)))


def queued(keys: Sequence[Key], epoch: str, number: int, since: float, now: float,
           hold: float) -> str:
    """A queue ticket: place `number` in queue `epoch`, queued since `since`, kept `hold`
    seconds from `now`."""
    return mint(keys, Ticket("q", "", epoch, number, int(since), int(now + hold)))


def read(text: str | None, keys: Sequence[Key], now: float) -> Ticket | None:
    """The ticket `text` says, when one of `keys` signed it and it has not expired; else None
    (a forged, damaged, foreign or stale ticket is as good as none)."""
    if not text or len(text) > MAX_TICKET or not keys:
        return None
    fields = text.split(".")
    if len(fields) != 9 or fields[0] != VERSION:
        return None
    _, kid, kind, sid, epoch, number, since, expires, mac = fields
    if (kind not in ("a", "q") or not _KID.fullmatch(kid) or not _FIELD.fullmatch(epoch)
            or len(epoch) > 32 or not _NUMBER.fullmatch(number) or not _NUMBER.fullmatch(since)
            or not _NUMBER.fullmatch(expires) or not _FIELD.fullmatch(mac)):
        return None
    if (kind == "a") != bool(sid) or (sid and not _SID.fullmatch(sid)):
        return None
    ticket = Ticket("a" if kind == "a" else "q", sid, epoch, int(number), int(since),
                    int(expires))
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        return None
    # constant-time: a timing side channel must not tell how much of a guess matched
    if not hmac.compare_digest(_mac(key.secret, _canonical(kid, ticket)), mac):
        return None
    return ticket if now <= ticket.expires else None


def read_keys(config: Config) -> tuple[Key, ...]:
    """The admission keys: EDGE360_ADMISSION_KEYS, or the file EDGE360_ADMISSION_KEYS_FILE
    names (read again on SIGHUP); ConfigError naming the setting when they do not parse."""
    path = config.admission.keys_file
    text = read_key_file("admission.keys_file", path) if path else config.admission.keys
    try:
        return parse_keys(text) if text.strip() else ()
    except ConfigError as e:
        raise ConfigError("admission.keys", e.problem) from None


#: the key id of a key a node made for itself (no EDGE360_ADMISSION_KEYS)
NODE_KID = "node-local"


def node_key() -> tuple[Key, ...]:
    """A key of this node's own, for a node with sessions.capacity but no admission keys: its
    tickets are good on this node only (a fleet shares EDGE360_ADMISSION_KEYS)."""
    return (Key(NODE_KID, secrets.token_bytes(32)),)


def node_key_text() -> str:
    """node_key() as EDGE360_ADMISSION_KEYS would say it, for the workers of one node."""
    return f"{NODE_KID}:{secrets.token_urlsafe(32)}"


def is_node_key(keys: Sequence[Key]) -> bool:
    return all(k.kid == NODE_KID for k in keys)


def cookie_value(header: str) -> str | None:
    """The ticket in a Cookie field (RFC 6265 §5.4: "name=value" pairs separated by "; ")."""
    for pair in header.split(";"):
        name, eq, value = pair.strip().partition("=")
        if eq and name == COOKIE:
            return value.strip('"') or None
    return None

