"""The clocks of one connection: a deadline (the head timeout while a request head arrives, the
keep-alive timeout while idle) and the send watchdog (limits.send_timeout).

The deadline is one timer re-armed lazily: the timer is replaced only when the deadline moves
earlier; when it fires before a later deadline it re-arms itself for that one. So a busy keep-alive
connection costs no timer churn per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from edge360.http.sendprogress import check_send_progress


class Deadline:
    """One timer; `expired()` runs when the armed deadline passes (unless disarmed)."""

    __slots__ = ("_at", "_deadline", "_expired", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0

    def arm(self, seconds: float) -> None:
        self.arm_at(self._loop.time() + seconds)

    def arm_at(self, deadline: float) -> None:
        """Expire at loop time `deadline`."""
        self._deadline = deadline
        if self._timer is None or self._at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._at = deadline
            self._timer = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        """No deadline until the next arm (the timer, if any, fires and finds none)."""
        self._deadline = None

    def cancel(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._at = deadline
            self._timer = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._expired()


class SendWatchdog:
    """Aborts the connection when its pending output has not moved for `timeout` seconds (a
    reader that stopped reading). It looks every timeout / 2 seconds, but only while there is
    something to watch: from `watch()` (an answer written by a task, or output the transport had
    to buffer) until a look finds the connection not `busy()` and nothing pending. An idle
    keep-alive connection costs no timer and no system call (at 60,000 viewers such looks had
    cost thousands of ioctls a second, for connections that had nothing to send)."""

    __slots__ = ("_busy", "_handle", "_loop", "_progress", "_timeout", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport,
                 timeout: Callable[[], float], busy: Callable[[], bool]) -> None:
        self._loop = loop
        self._transport = transport
        self._timeout = timeout
        self._busy = busy
        self._progress: list[Any] = [None, 0.0]
        self._handle: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Output may be pending from now on: look until it is gone (a no-op while watching)."""
        if self._handle is None:
            self._progress[0], self._progress[1] = None, time.monotonic()
            self._schedule()

    @property
    def watching(self) -> bool:
        """A look is scheduled."""
        return self._handle is not None

    def _schedule(self) -> None:
        self._handle = self._loop.call_later(max(0.05, self._timeout() / 2), self._check)

    def _check(self) -> None:
        self._handle = None
        if self._transport.is_closing():
            return
        pending = check_send_progress(self._transport, self._progress, self._timeout())
        if pending is not None and (pending or self._busy()):
            self._schedule()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
