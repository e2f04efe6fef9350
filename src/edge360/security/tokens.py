"""Signed URL tokens: mint and verify the HMAC-SHA256 `token` query parameter that gates content.

A token is six dot-separated fields, each in the URL-safe alphabet [A-Za-z0-9_-], so it never
needs percent-escaping in a query string (RFC 3986 §3.4):

    v1.<kid>.<exp>.<b64url(scope)>.<sid>.<b64url(mac)>

    kid    key id, [A-Za-z0-9_-]{1,32}
    exp    expiry, unix seconds, decimal integer; the token is valid while now <= exp + 1
    scope  path prefix the token covers, e.g. "/demo/", base64url without padding (RFC 4648 §5)
    sid    the session id the token is bound to ([A-Za-z0-9_-]{8,64}), or empty for any session
    mac    HMAC-SHA256 (RFC 2104) keyed with the UTF-8 bytes of the secret, over the UTF-8 bytes of
           "v1\\n<kid>\\n<exp>\\n<scope>\\n<sid>" (scope decoded, sid empty when unbound),
           base64url without padding (43 characters)

Keys come as "kid:secret[,kid:secret...]"; the first signs and all verify, so a new key is rolled
out by putting it first while the old one stays listed until the tokens it signed have expired.
Every refusal is the same Forbidden with the same message; the reason (for the log, never the
client) is the `reason` attribute of the exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from edge360.core.errors import ConfigError, Forbidden, UsageError
from edge360.sessions.identity import valid_sid  # a bound sid has the session id syntax

VERSION = "v1"
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64_RE = re.compile(r"[A-Za-z0-9_-]*")
_EXP_RE = re.compile(r"[0-9]{1,12}")
#: a token longer than this is refused before any parsing (scope is bounded by MAX_SCOPE)
MAX_TOKEN = 2048
MAX_SCOPE = 1024
#: RFC 2104 HMAC-SHA256 output length in bytes
_MAC_BYTES = 32
_GENERIC = "invalid or missing token"


@dataclass(frozen=True, slots=True)
class Key:
    """One signing key. The secret is kept out of repr() so it never lands in a log or traceback."""

    kid: str
    secret: bytes = field(repr=False)


def parse_keys(text: str) -> tuple[Key, ...]:
    """Keys from "kid:secret[,kid:secret...]"; commas, spaces and newlines all separate entries.

    Lines starting with '#' are comments, so a keys file can note when a key was rotated. A secret
    therefore cannot contain whitespace or commas. An empty text gives no keys (the caller decides
    whether that is allowed). Errors name `auth.keys` and the entry's position, never the secret.
    """
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("#")]
    entries = [e for e in re.split(r"[,\s]+", "\n".join(lines)) if e]
    keys: list[Key] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        kid, colon, secret = entry.partition(":")
        if not colon:
            raise ConfigError("auth.keys", f"entry {n} is not kid:secret")
        if not KID_RE.fullmatch(kid):
            raise ConfigError("auth.keys", f"entry {n}: key id must match [A-Za-z0-9_-]{{1,32}}")
        if not secret:
            raise ConfigError("auth.keys", f"entry {n} ({kid}): empty secret")
        if kid in seen:
            raise ConfigError("auth.keys", f"duplicate key id {kid!r}")
        seen.add(kid)
        keys.append(Key(kid, secret.encode("utf-8")))
    return tuple(keys)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Strict unpadded base64url: only the canonical spelling decodes (no malleable tokens)."""
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _canonical(kid: str, expires: int, scope: str, sid: str) -> bytes:
    return f"{VERSION}\n{kid}\n{expires}\n{scope}\n{sid}".encode()


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _valid_scope(scope: str) -> bool:
    # "\n" would make the canonical string ambiguous; NUL and other controls have no place in a
    # path; a lone surrogate has no UTF-8 form, so no portal could compute the same HMAC
    return (scope.startswith("/") and len(scope) <= MAX_SCOPE
            and not any(ord(c) < 0x20 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in scope))


def _signing_key(keys: Sequence[Key], kid: str | None) -> Key:
    if not keys:
        raise ConfigError("auth.keys", "no signing key configured")
    if kid is None:
        return keys[0]
    for key in keys:
        if key.kid == kid:
            return key
    raise UsageError(f"no key with id {kid!r} in auth.keys")


def sign(keys: Sequence[Key], *, scope: str, expires: int, sid: str | None = None,
         kid: str | None = None) -> str:
    """A token for paths under `scope` valid until unix second `expires`; first key unless `kid`."""
    if not _valid_scope(scope):
        raise UsageError(f"token scope must be a path starting with '/', at most {MAX_SCOPE} "
                         f"characters, no control characters: {scope!r}")
    if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 10**12:
        raise UsageError(f"token expiry must be unix seconds, got {expires!r}")
    if sid is not None and not valid_sid(sid):
        raise UsageError("a bound sid must match [A-Za-z0-9_-]{8,64}")
    key = _signing_key(keys, kid)
    bound = sid or ""
    mac = _mac(key.secret, _canonical(key.kid, expires, scope, bound))
    return ".".join((VERSION, key.kid, str(expires), _b64(scope.encode()), bound, _b64(mac)))


def default_scope(path: str) -> str:
    """The title folder of a decoded path: "/demo/master.m3u8" -> "/demo/"."""
    first, slash, _ = path.lstrip("/").partition("/")
    if not path.startswith("/") or not first or not slash:
        raise UsageError(f"cannot tell the title folder of {path!r}; give the scope explicitly")
    return f"/{first}/"


def sign_url(url: str, keys: Sequence[Key], *, ttl: int, now: float, scope: str | None = None,
             sid: str | None = None, kid: str | None = None) -> str:
    """`url` with `token=` appended (a former token replaced, other parameters kept as written)."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise UsageError(f"ttl must be a positive number of seconds, got {ttl!r}")
    parts = urlsplit(url)
    if scope is None:
        scope = default_scope(unquote(parts.path))
    token = sign(keys, scope=scope, expires=int(now) + ttl, sid=sid, kid=kid)
    kept = [p for p in parts.query.split("&") if p and _param_name(p) != "token"]
    query = "&".join([*kept, f"token={token}"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def scope_covers(scope: str, path: str) -> bool:
    """Whether `path` lies under `scope` on a segment boundary ("/demo/" never covers "/demo2/")."""
    if not path.startswith("/"):
        return False
    # a decoded path may still say "/demo/../other/"; the router normalises, but a token must not
    # depend on that, so dot segments are never covered (RFC 3986 §5.2.4 would move them)
    if any(seg in (".", "..") for seg in path.split("/")):
        return False
    if scope.endswith("/"):
        return path.startswith(scope)
    return path == scope or path.startswith(scope + "/")


class TokenRejected(Forbidden):
    """A Forbidden whose `reason` says which check failed, for the log; str() stays generic."""

    def __init__(self, reason: str) -> None:
        super().__init__(_GENERIC)
        self.reason = reason


def _refuse(reason: str) -> TokenRejected:
    return TokenRejected(reason)


def verify(token: str | None, *, path: str, sid: str | None, keys: Sequence[Key],
           now: float) -> None:
    """Return if `token` admits the decoded request `path` for session `sid` at unix time `now`.

    Otherwise raise Forbidden with one generic message; `err.reason` is one of missing, malformed,
    unknown_kid, bad_signature, expired, scope, sid.
    """
    if not token:
        raise _refuse("missing")
    if len(token) > MAX_TOKEN:
        raise _refuse("malformed")
    fields = token.split(".")
    if len(fields) != 6:
        raise _refuse("malformed")
    version, kid, exp_text, scope_b64, bound, mac_b64 = fields
    scope_raw = _unb64(scope_b64)
    mac = _unb64(mac_b64)
    if (version != VERSION or not KID_RE.fullmatch(kid) or not _EXP_RE.fullmatch(exp_text)
            or scope_raw is None or mac is None or len(mac) != _MAC_BYTES
            or (bound and not valid_sid(bound))):
        raise _refuse("malformed")
    try:
        scope = scope_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("malformed") from None
    if not _valid_scope(scope):
        raise _refuse("malformed")
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        raise _refuse("unknown_kid")
    expires = int(exp_text)
    # constant-time comparison: a timing side channel must not reveal how much of a guess matched
    if not hmac.compare_digest(_mac(key.secret, _canonical(kid, expires, scope, bound)), mac):
        raise _refuse("bad_signature")
    if not now <= expires + 1:  # the contract's one second of leeway, no more
        raise _refuse("expired")
    if not scope_covers(scope, path):
        raise _refuse("scope")
    if bound and bound != sid:
        raise _refuse("sid")


def _param_name(pair: str) -> str:
    # compare names as a server decodes them, so "%74oken=" cannot slip a token past redaction
    return unquote_plus(pair.partition("=")[0])


#: query parameters that are credentials: a signed token, an admission ticket (it lets its
#: holder in past a full node: docs/OVERLOAD.md, "Tickets")
_REDACTED = frozenset({"token", "ticket"})


def redact_query(query: str) -> str:
    """The raw query with each `token` and `ticket` value replaced by *** for access logs; all
    else kept."""
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        out.append(f"{pair.partition('=')[0]}=***" if _param_name(pair) in _REDACTED else pair)
    return "&".join(out)
