"""The one place an error becomes a status: errors -> limits -> observe (counters, access log).

Handlers raise Edge360Error subclasses (each carries its status and extra headers); anything else
is a bug, logged once with its traceback and answered 500 with no detail. Every answer is counted
by kind and code. The access log is aiohttp's access-logger hook (`runner_options`), called once
the answer is written, writing through accesslog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from edge360.core.errors import Edge360Error
from edge360.core.kinds import kind_of
from edge360.http.guard import LIMITS
from edge360.http.viewers import address_of
from edge360.node.state import NodeState, node_of

log = logging.getLogger("edge360")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, reason: str, headers: dict[str, str] | None = None,
                   cors: str | None = None) -> web.Response:
    h = dict(headers or {})
    if cors:
        h["Access-Control-Allow-Origin"] = cors
    h.setdefault("Cache-Control", "no-store")
    return web.Response(status=status, body=orjson.dumps({"error": reason}),
                        content_type="application/json", headers=h)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = node_of(request)
    started = time.monotonic()
    cors = node.config.origin.cors_origin
    address = address_of(request, node)
    try:
        request.app[LIMITS].check(request, address, started)
        response = await handler(request)
    except Edge360Error as e:
        response = error_response(e.status, e.public_message, e.headers, cors)
        if e.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, e.status, e)
    except web.HTTPException as e:  # aiohttp's own refusals (e.g. a body too large)
        response = error_response(e.status, e.reason, None, cors)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal error", None, cors)
    kind = kind_of(request.path)
    node.counters.requests[(kind, str(response.status))] += 1
    return response


def runner_options(node: NodeState) -> dict[str, Any]:
    """The access-log options of an AppRunner serving `node`'s app: aiohttp calls the logger
    after each answer is written (so the byte count is what went out), parser refusals included;
    the lines go to node.access_log (accesslog). None of it without server.access_log."""
    if node.access_log is None:
        return {"access_log": None}

    class AccessLogger(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
            if node.access_log is None:
                return
            node.access_log.request(
                client=address_of(request, node), method=request.method, path=request.path,
                query=request.query_string, status=response.status, sent=response.body_length,
                seconds=time, cache=response.headers.get("X-Cache"),
                ua=request.headers.get("User-Agent", ""))

    return {"access_log": logging.getLogger("edge360.access"), "access_log_class": AccessLogger}
