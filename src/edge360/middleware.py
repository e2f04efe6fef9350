"""The one place an error becomes a status: errors -> limits -> observe (counters, access log).

Handlers raise Edge360Error subclasses (each carries its status and extra headers); anything else
is a bug, logged once with its traceback and answered 500 with no detail. Every answer is counted
by kind and code, and written as one JSON access-log line when the access log is on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from edge360.auth import redact_query
from edge360.errors import Edge360Error
from edge360.kinds import kind_of
from edge360.limits import LIMITS
from edge360.state import node_of
from edge360.viewers import address_of

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
    if node.config.server.access_log:
        _access_log(request, response, address, time.monotonic() - started)
    return response


def _access_log(request: web.Request, response: web.StreamResponse, address: str,
                seconds: float) -> None:
    # the query goes through redact_query (token values become ***); no request header but the
    # User-Agent is written, so an Authorization bearer never reaches the log
    line = {
        "ts": round(time.time(), 3),
        "client": address,
        "method": request.method,
        "path": request.path,
        "query": redact_query(request.query_string) if request.query_string else "",
        "status": response.status,
        "bytes": response.body_length if response.prepared else response.content_length,
        "ms": round(seconds * 1000, 2),
        "cache": response.headers.get("X-Cache"),
        "ua": request.headers.get("User-Agent", ""),
    }
    sys.stderr.write(orjson.dumps(line).decode() + "\n")
