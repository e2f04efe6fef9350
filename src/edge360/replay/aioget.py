"""An aiohttp ClientSession behind the lean client's `get` (replay/wire.py), for callers that bring
their own session: the tests that trace a player's requests, or a session with its own TLS or
proxy settings. Its answers and errors are the lean client's, so the player reads both alike.

The session should be made with `auto_decompress=False`: the player decompresses gzip'd playlists
itself and counts segment bytes as they came over the wire.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from edge360.replay.wire import Answer, FetchError


class SessionGetter:
    """GETs through an aiohttp session; aiohttp's exceptions become FetchError kinds."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def get(self, url: str, headers: Mapping[str, str] | None = None, *,
                  keep_body: bool = True) -> Answer:
        try:
            async with self.session.get(url, headers=headers) as resp:
                if keep_body or resp.status not in (200, 206):
                    body = await resp.read()
                    return Answer(resp.status, list(resp.raw_headers), body, len(body))
                n = 0
                while chunk := await resp.content.readany():
                    n += len(chunk)      # a segment is counted, never held
                return Answer(resp.status, list(resp.raw_headers), None, n)
        except TimeoutError as exc:      # aiohttp's own timeouts are TimeoutErrors too
            raise FetchError("timeout", str(exc)) from exc
        except aiohttp.ClientConnectionError as exc:
            raise FetchError("connection", str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise FetchError("client", str(exc)) from exc
