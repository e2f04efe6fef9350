"""Admission at a viewer's playlist request (docs/OVERLOAD.md, "Admission"): let it in, send it
to another pathway that has room, or answer 503 with its place in the queue.

A viewer that carries a valid admitted ticket (minted by any node of the fleet), or whose session
is open here, is an existing viewer: it is never refused and counts in no admission figure. A new
viewer (a playlist without a known sid) is admitted while the node has a seat for it; with
content steering, a new viewer the fleet has room for elsewhere is admitted there instead
(`away`: it takes no seat and opens no session here). Otherwise it gets 503 with Retry-After, a
queue ticket (cookie and query parameter) that keeps its place for sessions.queue_hold seconds,
and a short "you are in the queue" page, JSON or HTML by its Accept field. Requests of child
caches (peer token) never come here: they are no viewers.

With one process the decision is taken at once; with --workers N it is the hub's (one queue and
one session table for the node), so the check becomes a coroutine. Either way the result is
what the handler goes on with: None to serve the playlist, or the 503 Response.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import orjson

from edge360.core import steering
from edge360.http.represent import cors_headers
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request
from edge360.node.overload import ADMITTED_TTL, OverloadState
from edge360.node.state import NodeState
from edge360.security import tickets
from edge360.sessions import admission
from edge360.sessions.admission import Verdict
from edge360.sessions.viewer import Viewer

Answer = Response | Awaitable[Response]
Held = Response | Awaitable[Response | None] | None


def ticket_text(request: Request) -> str | None:
    """The ticket a request carries: its `ticket` query parameter, else its cookie."""
    found = request.param("ticket")
    if found:
        return found
    cookie = request.fields.get("cookie")
    return tickets.cookie_value(cookie) if cookie else None


def gate(request: Request, node: NodeState, viewer: Viewer, title: str) -> Held:
    """Check a viewer's playlist request; None: serve it (the viewer's ticket, pathway and
    freshness are set), a Response: the 503, an awaitable: the hub decides (then either)."""
    ov = node.overload
    if ov is None or not ov.active:
        return None
    now = node.clock()
    raw = ticket_text(request)
    ticket = tickets.read(raw, ov.keys, now) if raw else None
    if ticket is not None and ticket.kind == "a" and (viewer.minted or viewer.sid == ticket.sid):
        # admitted before, here or anywhere in the fleet: an existing viewer, never refused
        if viewer.minted:  # a returning browser's cookie: it keeps its session id
            viewer.key = viewer.sid = ticket.sid
            viewer.minted = False
        viewer.ticket = raw
        return None
    explicit = not viewer.minted and viewer.sid is not None
    target = _target(ov) if not explicit else None
    own = ov.own_pathway()
    if ov.capacity <= 0:
        if not explicit:
            _welcome(node, ov, viewer, target, away=own is not None and target not in (None, own))
        return None
    if target is not None and own is not None and target != own:
        _welcome(node, ov, viewer, target, away=True)
        return None
    elsewhere = _elsewhere(ov, own)
    queue_ticket = (ticket.epoch, ticket.number) if ticket is not None and ticket.kind == "q" \
        else None
    since = float(ticket.since) if ticket is not None and ticket.kind == "q" else now
    hub = node.hub
    if hub is None or ov.queue is not None:
        assert ov.queue is not None
        seats = ov.seats
        assert seats is not None
        verdict = admission.admit(
            seats, ov.queue, now, key=viewer.key, explicit=explicit, title=title,
            capacity=ov.capacity, hold=_hold(node), idle=node.config.sessions.idle_timeout,
            ticket=queue_ticket, spare=elsewhere is not None)
        return _settle(request, node, ov, viewer, verdict, elsewhere, since, target)

    async def remote() -> Response | None:
        reply = await hub.admit({
            "key": viewer.key, "explicit": explicit, "title": title, "capacity": ov.capacity,
            "hold": _hold(node), "idle": node.config.sessions.idle_timeout,
            "ticket": list(queue_ticket) if queue_ticket else None,
            "spare": elsewhere is not None})
        ov.remote["epoch"] = reply["epoch"]
        return _settle(request, node, ov, viewer, admission.from_wire(reply["v"]), elsewhere,
                       since, target)
    return remote()


async def after(held: Awaitable[Response | None], then: Callable[[], Answer]) -> Response:
    """The playlist's answer once the hub decided: the 503, or what `then` answers."""
    refused = await held
    if refused is not None:
        return refused
    answer = then()
    return answer if isinstance(answer, Response) else await answer


def _hold(node: NodeState) -> float:
    return node.config.sessions.queue_hold


def _target(ov: OverloadState) -> str | None:
    """The pathway a new viewer starts on (None without steering)."""
    if not ov.steering:
        return None
    return steering.assign(ov.pathways(), ov.pending())


def _elsewhere(ov: OverloadState, own: str | None) -> str | None:
    """Another pathway with room for a new viewer, when this node knows which one it is."""
    if not ov.steering or own is None:
        return None
    others = [p for p in ov.pathways() if p.id != own]
    return steering.assign(others, ov.pending()) if others else None


def _welcome(node: NodeState, ov: OverloadState, viewer: Viewer, pathway: str | None, *,
             away: bool = False) -> None:
    """A new viewer is in: its admitted ticket, its pathway; counted once."""
    viewer.fresh = True
    viewer.pathway = pathway
    viewer.away = away
    if ov.tickets and viewer.sid is not None:
        viewer.ticket = tickets.admitted(ov.keys, viewer.sid, node.clock(), ADMITTED_TTL)
    if pathway is not None and pathway in ov.paths:
        ov.note_sent(pathway, node.clock())
    if ov.capacity > 0:
        node.counters.admission["admitted"] += 1


def _settle(request: Request, node: NodeState, ov: OverloadState, viewer: Viewer,
            verdict: Verdict, elsewhere: str | None, since: float,
            target: str | None) -> Response | None:
    if verdict.known:
        return None
    if verdict.admitted:
        _welcome(node, ov, viewer, target)
        return None
    if elsewhere is not None:
        _welcome(node, ov, viewer, elsewhere, away=True)
        return None
    if verdict.fresh:
        node.counters.admission["queued"] += 1
    return queued(request, node, ov, verdict, since)


def queued(request: Request, node: NodeState, ov: OverloadState, verdict: Verdict,
           since: float) -> Response:
    """The 503 of a queued viewer: Retry-After, its refreshed ticket (cookie and in the retry
    URL), its position, as JSON or, for a browser, a page that comes back by itself."""
    now = node.clock()
    hold = _hold(node)
    epoch = ov.queue.epoch if ov.queue is not None else str(ov.remote.get("epoch", ""))
    ticket = tickets.queued(ov.keys, epoch, verdict.number, since, now, hold)
    query = [(k, v) for k, v in request.query if k not in ("ticket", "sid")]
    retry = quote(request.path) + "?" + urlencode([*query, ("ticket", ticket)])
    wait = verdict.retry_after
    headers = {
        **cors_headers(node.config.origin.cors_origin),
        "Retry-After": str(wait), "Cache-Control": "no-store",
        "Set-Cookie": f"{tickets.COOKIE}={ticket}; Max-Age={int(hold)}; Path=/; HttpOnly; "
                      "SameSite=Lax",
    }
    headers["Access-Control-Expose-Headers"] += ", Retry-After"
    if node.config.server.role == "edge":
        headers["X-Cache"] = "MISS"
    info = {"queued": True, "position": verdict.position, "retry_after": wait,
            "waited": round(max(now - since, 0.0), 3), "ticket": ticket, "retry": retry}
    if _wants_html(request.fields.get("accept", "")):
        headers["Content-Type"] = "text/html; charset=utf-8"
        body = _page(info, retry, wait).encode()
    else:
        headers["Content-Type"] = "application/json"
        body = orjson.dumps(info)
    return Response(503, encode_fields(headers), body=body, cache=headers.get("X-Cache"))


def _wants_html(accept: str) -> bool:
    """A browser navigating (text/html before any JSON in its Accept field)."""
    lowered = accept.lower()
    at = lowered.find("text/html")
    return at >= 0 and (lowered.find("json") < 0 or at < lowered.find("json"))


def _page(info: dict[str, object], retry: str, wait: int) -> str:
    url = html.escape(retry, quote=True)
    return (f'<!doctype html><html><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{wait};url={url}">'
            f"<title>You are in the queue</title></head><body>"
            f"<h1>You are in the queue</h1><p>So many people are watching that there is no room "
            f"for one more right now. Your place is kept: this page tries again in {wait} "
            f"seconds (position {info['position']}).</p>"
            f'<p><a href="{url}">Try now</a></p></body></html>')
