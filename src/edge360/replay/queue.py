"""A node's admission queue as a virtual player meets it (docs/OVERLOAD.md, "Admission"): a 503
with Retry-After on the master playlist is a place in the queue, not an error. The player waits
the seconds it was told and asks again with the ticket the answer gave it (the `retry` URL of
the JSON body, which carries the ticket as a query parameter), until it is admitted or its
watch time is over. `queued` reads an answer (pure); `admitted_master` is the player's wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from edge360.replay.wire import Answer

if TYPE_CHECKING:
    from edge360.replay.player import VirtualPlayer

#: the longest wait a Retry-After may ask for that a player honours (a day: anything more is
#: a date or a mistake, and the player leaves)
MAX_WAIT_S = 86400.0
#: refusals one player takes at most before it leaves (besides its watch time)
MAX_TRIES = 100_000


@dataclass(frozen=True)
class Queued:
    """A refusal that put the player in a queue: wait this long, then ask for `retry`."""

    wait_s: float
    retry: str
    position: int | None


def queued(answer: Answer, url: str) -> Queued | None:
    """The queue place a 503 gives (None for any other answer, or a 503 without Retry-After:
    an error, not a queue)."""
    if answer.status != 503:
        return None
    raw = answer.header("Retry-After")
    try:
        wait = float(raw) if raw is not None else -1.0
    except ValueError:
        return None
    if not 0 <= wait <= MAX_WAIT_S:
        return None
    retry, position = url, None
    try:
        data = json.loads(answer.body or b"")
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("retry"), str) and data["retry"]:
            retry = urljoin(url, data["retry"])
        if isinstance(data.get("position"), int):
            position = data["position"]
    return Queued(wait, retry, position)


def refusal_of(player: VirtualPlayer) -> Answer | None:
    """The answer the player's last fetch was refused with. Read through a call: after
    `player.refusal = None`, mypy takes the attribute to stay None across the fetch that sets
    it, and compiled code enforces what mypy infers (docs/ARCHITECTURE.md, "Compiled modules")."""
    return player.refusal


async def admitted_master(self: VirtualPlayer) -> tuple[str, str] | None:
    """The master playlist and the URL that got it, once the target admits the viewer: a
    503 with Retry-After is a place in its queue (replay/queue.py), waited out while the
    viewer's watch time lasts, which starts again from its admission."""
    url = self.cfg.master_url
    since: float | None = None
    for _ in range(MAX_TRIES):
        self.refusal = None
        body = await self._fetch(url, text=True, queue=True)
        if isinstance(body, str):
            if since is not None:
                waited = self.waited = time.monotonic() - since
                self.quit_at += waited
                self.stats.queue_admitted += 1
                self.stats.queue_wait.add(waited)
                self.stats.queue_wait_max = max(self.stats.queue_wait_max, waited)
            return body, url
        refusal = refusal_of(self)
        place = None if refusal is None else queued(refusal, url)
        if place is None:
            if refusal is not None:
                self.stats.error("http_503")
            return None
        self.stats.refusals += 1
        if since is None:
            since = time.monotonic()
            self.stats.queued += 1
        url = place.retry
        if not await self._sleep_until(time.monotonic() + place.wait_s):
            self.stats.queue_left += 1
            return None
    return None
