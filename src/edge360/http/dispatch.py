"""The application on top of every connection: route a request (the node's own endpoints by exact
path, everything else to the role's content handler), apply the request limits, turn a refusal
into its answer, and count and log each answer once.

Handlers raise Edge360Error subclasses (each carries its status and extra headers); anything else
is a bug, logged once with its traceback and answered 500 with no detail. Every answer is counted
in `edge360_requests_total{kind,code}` and written to the access log (server.access_log) here and
nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge360.core.errors import Edge360Error, MethodNotAllowed, Overloaded
from edge360.core.kinds import OTHER
from edge360.http.guard import Limits
from edge360.http.response import Response, error_response
from edge360.http.viewers import address_of
from edge360.http.wire import Request
from edge360.node.state import NodeState

log = logging.getLogger("edge360")

Answer = Response | Awaitable[Response]
Endpoint = Callable[[Request], Answer]


@dataclass(frozen=True, slots=True)
class Route:
    """A node endpoint: the methods it answers (HEAD goes with GET) and its handler."""

    methods: frozenset[str]
    handler: Endpoint


def route(handler: Endpoint, *methods: str) -> Route:
    allowed = set(methods or ("GET",))
    if "GET" in allowed:
        allowed.add("HEAD")
    return Route(frozenset(allowed), handler)


class Dispatcher:
    """http.protocol.Handler for one node: see the module docstring."""

    def __init__(self, node: NodeState, limits: Limits, content: Endpoint,
                 routes: dict[str, Route] | None = None, *, counted: bool = True) -> None:
        self.node = node
        self.counted = counted  # False: a monitoring listener, whose scrapes are not traffic
        self.limits = limits
        self.content = content
        self.routes: dict[str, Route] = dict(routes or {})
        self.cors = node.config.origin.cors_origin

    def respond(self, request: Request) -> Answer:
        try:
            self.limits.check(request, address_of(request, self.node))
            found = self.routes.get(request.path)
            if found is None:
                result = self.content(request)
            elif request.method not in found.methods:
                raise MethodNotAllowed(request.method,
                                       headers={"Allow": ", ".join(sorted(found.methods))})
            else:
                result = found.handler(request)
        except Edge360Error as e:
            return self.refuse(e)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path[:200])
            return error_response(500, "internal error", cors=self.cors)
        if isinstance(result, Response):
            return result
        return self._settled(request, result)

    async def _settled(self, request: Request, pending: Awaitable[Response]) -> Response:
        try:
            return await pending
        except Edge360Error as e:
            return self.refuse(e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path[:200])
            return error_response(500, "internal error", cors=self.cors)

    def refuse(self, error: Edge360Error) -> Response:
        """The answer to a refusal (a request limit, a bad head, a handler's error)."""
        if error.status >= 500 and not isinstance(error, Overloaded):
            log.warning("answered %d: %s", error.status, error)
        return error_response(error.status, error.public_message, error.headers, cors=self.cors,
                              cache=error.headers.get("X-Cache"))

    def observe(self, request: Request | None, response: Response, wire_bytes: int,
                seconds: float, peer: str) -> None:
        """Count the answer once it is written, and log it."""
        node = self.node
        if self.counted:
            kind = request.kind if request is not None else OTHER
            node.counters.requests[(kind, str(response.status))] += 1
        access = node.access_log
        if access is not None:
            if request is None:
                access.request(client=peer, method="-", path="-", query="",
                               status=response.status, sent=wire_bytes, seconds=seconds,
                               cache=None, ua="")
                return
            access.request(client=address_of(request, node), method=request.method,
                           path=request.path, query=request.query_string,
                           status=response.status, sent=wire_bytes, seconds=seconds,
                           cache=response.cache, ua=request.fields.get("user-agent", ""))
