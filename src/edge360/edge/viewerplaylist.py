"""A stored playlist as one viewer receives it: the upstream copy compiled once per version
(edge.playlists), rendered with the viewer's session parameters, finished as the node's masters
are (steering, admission notes: http.masters), compressed when the client accepts it, and sent
private whenever it carries the viewer's sid or token (a shared cache downstream must never hand
it to another viewer)."""

from __future__ import annotations

import hashlib

from edge360.core.conditional import parse_http_date
from edge360.edge.objects import Target
from edge360.edge.playlists import PlaylistIndex
from edge360.edge.stored import StoredObject
from edge360.hls.personalize import gzip_accepted, personalize
from edge360.http.masters import finish
from edge360.http.represent import Prepared, memory_slicer, plan_for, render
from edge360.http.response import Response
from edge360.http.wire import Request
from edge360.node.state import NodeState
from edge360.sessions.viewer import Viewer


def for_viewer(index: PlaylistIndex, node: NodeState, request: Request, t: Target,
               obj: StoredObject | None, body: bytes, headers: dict[str, str],
               viewer: Viewer | None, result: str, max_ranges: int) -> Response:
    """The answer to `request` for the stored (unrewritten) playlist `body` of target `t`;
    `headers` are the answer's fields so far, `result` its X-Cache."""
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
    prepared = Prepared(headers)
    last = obj.stored.last_modified if obj else parse_http_date(headers.get("Last-Modified"))
    p = plan_for(request, prepared, len(out), last, max_ranges)
    return render(p, prepared, memory_slicer(out), cache=result)
