"""Validation of a stored response (RFC 9111 §4.3): the validators a revalidation sends, and
whether an answer to it (a 304, or a 200 to HEAD) identifies the stored response it would
freshen. The freshened entry itself is core.policy.revalidated's."""

from __future__ import annotations

from collections.abc import Mapping

from edge360.core.cachecontrol import last_modified_value
from edge360.core.conditional import strong_match, weak_match
from edge360.core.policy import StoredResponse


def conditional_headers(entry: StoredResponse) -> dict[str, str]:
    """The validators to send when revalidating (§4.3.1): If-None-Match from the ETag (weak ones
    too, as the comparison for If-None-Match is weak) and If-Modified-Since from Last-Modified."""
    out: dict[str, str] = {}
    if entry.etag:
        out["if-none-match"] = entry.etag
    if entry.last_modified is not None:
        out["if-modified-since"] = entry.fields["last-modified"]
    return out


def validator_matches(entry: StoredResponse, response_headers: Mapping[str, str]) -> bool:
    """Whether a 304 identifies this stored response for update (§4.3.4).

    A strong ETag must equal the stored one strongly; a weak one must match weakly; failing an
    ETag, an equal Last-Modified. A 304 without validators answers the conditional request made
    from this entry's validators, so it can only refer to this entry and is accepted.
    """
    etag = response_headers.get("etag")
    if etag is not None and entry.etag is not None:
        if not etag.strip(" \t").startswith("W/"):
            return strong_match(etag, entry.etag)
        return weak_match(etag, entry.etag)
    if etag is not None:
        return False
    last_modified = last_modified_value(response_headers)
    if last_modified is not None:
        return entry.last_modified == last_modified
    return True


def head_matches(entry: StoredResponse, head_headers: Mapping[str, str]) -> bool:
    """Whether a 200 answer to HEAD may freshen the stored GET response (§4.3.5): it carries a
    validator, each one it carries equals the stored one, and so does any Content-Length.
    Otherwise the caller treats the stored response as stale."""
    names = [n for n in ("etag", "last-modified", "content-length") if n in head_headers]
    return names not in ([], ["content-length"]) and all(
        head_headers[n].strip(" \t") == entry.fields.get(n, "").strip(" \t") for n in names)
