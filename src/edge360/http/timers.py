"""The clocks of a fast-path connection (fasthttp.FastProtocol): one deadline timer for the head
timeout and the keep-alive timeout, and the send watchdog of limits.send_timeout.

The deadline is re-armed lazily: a timer is only replaced when the deadline moves earlier; when
it fires before a later deadline it re-arms itself for it. So a busy keep-alive connection costs
no timer churn per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edge360.http.guard import ConnectionGuard
from edge360.http.sendprogress import check_send_progress


class ConnectionTimers:
    """The timer half of fasthttp.FastProtocol."""

    _transport: asyncio.Transport | None
    _guard: ConnectionGuard
    _loop: asyncio.AbstractEventLoop
    _busy: bool
    _deadline: float | None
    _timer: asyncio.TimerHandle | None
    _timer_at: float
    _watchdog: asyncio.TimerHandle | None
    _progress: list[Any]

    def _arm(self, seconds: float) -> None:
        self._deadline = deadline = self._loop.time() + seconds
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._timed_out)

    def _cancel_timer(self) -> None:
        self._deadline = None  # the timer, if any, fires and finds no deadline

    def _cancel_timers(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _timed_out(self) -> None:
        # a head that did not end in time, or a keep-alive connection idle too long
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # writing an answer: the next _arm starts a timer
        if self._loop.time() < deadline:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._timed_out)
            return
        if self._transport is not None and not self._busy:
            self._transport.close()

    def _schedule_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(
            max(0.05, self._guard.send_timeout / 2), self._check_send)

    def _check_send(self) -> None:
        self._watchdog = None
        if self._transport is None or self._transport.is_closing():
            return
        if check_send_progress(self._transport, self._progress, self._guard.send_timeout):
            self._schedule_watchdog()
