"""Taking a keep-alive connection back from aiohttp's RequestHandler between two requests.

The fast path (fasthttp) hands a connection to aiohttp for a request it does not answer (a cache
miss, a 404, a conditional request). Without a way back, every viewer connection that ever
missed (at a release, all of them) would stay on the slower path for its whole life. So when the
next request's first bytes arrive, the fast path asks here whether aiohttp is idle on that
connection: waiting for a new message, nothing queued, no request in progress, no upgrade, not
closing. Then aiohttp lets go of the transport without closing it, and the fast path parses the
new head itself.

This reads RequestHandler attributes aiohttp does not document (checked against aiohttp 3.9 to
3.14). Each is read with a default that means "not idle", so an aiohttp that changed them only
loses the hand-back, never a request: the connection then stays with aiohttp, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any


def idle(handler: Any) -> bool:
    """Whether aiohttp's RequestHandler sits between requests, with nothing of the client's
    in flight (every request it was given has been answered and its answer written out)."""
    waiter = getattr(handler, "_waiter", None)
    return (isinstance(waiter, asyncio.Future) and not waiter.done()
            and getattr(handler, "transport", None) is not None
            and not getattr(handler, "_messages", True)
            and getattr(handler, "_request_in_progress", True) is False
            and getattr(handler, "_current_request", True) is None
            and getattr(handler, "_payload_parser", True) is None
            and getattr(handler, "_upgraded", False) is False
            and getattr(handler, "_close", True) is False
            and getattr(handler, "_force_close", True) is False)


def detach(handler: Any) -> None:
    """Make an idle RequestHandler forget its connection without closing it: with no transport,
    its connection_lost ends the task that waits for requests, uncounts the connection in the
    aiohttp server and cancels its keep-alive timer, and closes nothing."""
    handler.transport = None
    handler.connection_lost(None)
