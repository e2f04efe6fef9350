"""Owner of every background task: the only create_task caller, and the one that cancels them.

Nothing runs unowned: a task started here is cancelled and awaited at shutdown, and a task that dies
with an error is logged instead of vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("edge360.tasks")


class TaskGroup:
    """A bounded set of named background tasks."""

    def __init__(self, limit: int = 100_000) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._limit = limit
        self.closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Start `coro`; None (and the coroutine closed) when shutting down or at the limit."""
        if self.closed or len(self._tasks) >= self._limit:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def every(self, seconds: float, fn: Callable[[], Awaitable[Any]], name: str) -> None:
        """Run `fn` every `seconds` until shutdown; one failure is logged, not fatal."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("periodic task %s failed", name)
        self.spawn(loop(), name)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
