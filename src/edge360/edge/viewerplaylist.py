"""A stored playlist as one viewer receives it: the upstream copy compiled once per version
(edge.playlists), rendered with the viewer's session parameters, finished as the node's masters
are (steering, admission notes: http.masters), compressed when the client accepts it, and sent
private whenever it carries the viewer's sid or token (a shared cache downstream must never hand
it to another viewer)."""

from __future__ import annotations

import hashlib
from typing import Final

from edge360.core.conditional import parse_http_date
from edge360.core.lru import Memo
from edge360.edge.objects import Target
from edge360.edge.playlists import PlaylistIndex
from edge360.edge.stored import StoredObject
from edge360.hls.personalize import gzip_accepted, personalize
from edge360.http.masters import finish
from edge360.http.represent import ACCEPT_RANGES, Prepared, memory_slicer, plan_for, render
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request
from edge360.node.state import NodeState
from edge360.sessions.viewer import Viewer

#: viewer header blocks remembered (a few variants of each hit block)
MAX_BLOCKS: Final = 4_096


def for_viewer(index: PlaylistIndex, node: NodeState, request: Request, t: Target,
               obj: StoredObject | None, body: bytes, headers: dict[str, str],
               viewer: Viewer | None, result: str, max_ranges: int,
               blocks: ViewerBlocks | None = None, base: Prepared | None = None) -> Response:
    """The answer to `request` for the stored (unrewritten) playlist `body` of target `t`;
    `headers` are the answer's fields so far (a copy of `base`'s when the hit path made them),
    `result` its X-Cache."""
    if not index.knows(t.path):
        index.learn(t.path, t.title, body.decode("utf-8", "replace"))
    version = obj.version if obj and obj.version else hashlib.blake2b(body).hexdigest()
    compiled = index.compiled(t.key, version, body)
    params = viewer.params() if viewer is not None else ""
    gzip_ok = gzip_accepted(request.fields.get("accept-encoding", ""), "range" in request.fields)
    rendered = finish(node, viewer, t.path, t.title, compiled.render(params), headers)
    out, etag = personalize(rendered, params, headers, headers.get("ETag"), gzip_ok)
    if etag:
        headers["ETag"] = etag
    if blocks is not None and base is not None:
        prepared = Prepared(headers, block=blocks.block(base, bool(params), headers))
    else:
        prepared = Prepared(headers)
    last = obj.stored.last_modified if obj else parse_http_date(headers.get("Last-Modified"))
    p = plan_for(request, prepared, len(out), last, max_ranges)
    return render(p, prepared, memory_slicer(out), cache=result)


class ViewerBlocks:
    """The header blocks of viewers' playlists, encoded once per shared block and variant.

    What `finish` and `personalize` change in a hit's fields depends on the hit's block (`base`:
    one stored version, answer kind and second of age, edge.hits), whether the viewer has ids
    (private Cache-Control), gzip, and the node's CMSD-Dynamic; only the ETag is the viewer's own.
    So the rest is encoded once per variant and the ETag line appended per answer (field order
    carries no meaning, RFC 9110 §5.3)."""

    def __init__(self, limit: int = MAX_BLOCKS) -> None:
        self._blocks: Memo[tuple[int, bool, bool, str | None], tuple[Prepared, bytes]] = \
            Memo(limit)

    def block(self, base: Prepared, private: bool, headers: dict[str, str]) -> bytes:
        """The header block of `headers` (base's fields as finished for one viewer)."""
        key = (id(base), private, "Content-Encoding" in headers, headers.get("CMSD-Dynamic"))
        found = self._blocks.get(key)
        if found is not None and found[0] is base:  # holding base keeps its id from reuse
            shared = found[1]
        else:
            shared = encode_fields({k: v for k, v in headers.items() if k != "ETag"}) + \
                ACCEPT_RANGES
            self._blocks.put(key, (base, shared))
        etag = headers.get("ETag")
        return shared if etag is None else shared + b"ETag: " + etag.encode("latin-1") + b"\r\n"
