"""Admission by capacity: whether a new viewer may open a session now, and where the others stand
in the node's queue (docs/OVERLOAD.md, "Admission").

The queue is a bakery's: a refused viewer takes the next number, and the node calls numbers in
order as places free up. A called number keeps its place for a grace period while its viewer
comes back (it was told when, with Retry-After); a viewer who never comes back loses it when the
grace runs out. The node keeps no list of who waits: three integers and a few time buckets of
held places, whatever the queue's length. The number travels in the viewer's signed ticket
(security.tickets), which the shell reads and passes in.

A node counts towards its capacity every session it has admitted and not yet ended: active
sessions, and starting ones (admitted at their first playlist, not yet at their first segment),
so a burst of arrivals can never be admitted past the capacity before any of them plays.

Retry-After is the time the viewer's place is expected to be called, from the sessions that
ended over the last minute (the churn), clamped to 2-60 s. Pure: `now` is a parameter (the
node's clock, seconds).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

#: seconds over which ended sessions are counted for the churn
CHURN_WINDOW = 60.0
#: Retry-After bounds (seconds)
MIN_RETRY = 2
MAX_RETRY = 60
#: a called place is held this long past the longest Retry-After a waiting viewer was told
GRACE_SLACK = 2.0
#: time buckets the held places are kept in at most (each grace / HELD_BUCKETS wide)
HELD_BUCKETS = 32


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the node says to a viewer that would open a session."""

    admitted: bool
    known: bool = False  # an existing viewer (its session is open here): nothing was decided
    number: int = 0  # its place in the queue (queued)
    position: int = 0  # places still to be called before its own (0: called, waiting a seat)
    retry_after: int = 0
    fresh: bool = False  # a place was handed out for this request


class Queue:
    """The node's queue: numbers handed out and called, places held, and the churn."""

    def __init__(self, epoch: str) -> None:
        #: names this run of the queue: a ticket's number means something only here
        self.epoch = epoch
        self.issued = 0  # the last number handed out
        self.called = 0  # numbers up to this one may come in
        self._held: deque[list[float]] = deque()  # [called at, places still held], oldest first
        self._ended: deque[tuple[float, int]] = deque()  # (time, sessions ended so far)

    # -- the churn

    def observe(self, now: float, ended_total: int) -> None:
        """Sessions ended so far (views minus active), sampled about once a second."""
        samples = self._ended
        if samples and now - samples[-1][0] < 0.5:
            return
        samples.append((now, ended_total))
        while len(samples) > 2 and now - samples[1][0] >= CHURN_WINDOW:
            samples.popleft()

    def churn(self) -> float | None:
        """Sessions ended per second over the window, None before two samples a second apart."""
        if len(self._ended) < 2:
            return None
        (t0, n0), (t1, n1) = self._ended[0], self._ended[-1]
        if t1 - t0 < 1.0:
            return None
        return max(n1 - n0, 0) / (t1 - t0)

    def retry_after(self, position: int, *, idle: float, hold: float) -> int:
        """Seconds until `position` more places are likely to free up: by the churn, or, before
        any session has ended, by the idle timeout (no session ends sooner); at most half the
        queue hold, so a viewer always comes back before its ticket lapses."""
        rate = self.churn()
        wait = (position + 1) / rate if rate else idle
        top = max(MIN_RETRY, min(MAX_RETRY, int(hold / 2)))
        return max(MIN_RETRY, min(top, math.ceil(wait)))

    # -- held places

    @staticmethod
    def grace(hold: float) -> float:
        return min(hold, MAX_RETRY + GRACE_SLACK)

    def held(self, now: float, hold: float) -> int:
        """Places called and not yet claimed, within their grace."""
        held = self._held
        grace = self.grace(hold)
        while held and now - held[0][0] >= grace:
            held.popleft()
        return int(sum(n for _, n in held))

    def _call(self, now: float, free: int, hold: float) -> None:
        """Call waiting numbers into the free places not already held for called ones."""
        room = free - self.held(now, hold)
        n = min(room, self.issued - self.called)
        if n <= 0:
            return
        self.called += n
        held = self._held
        if held and now - held[-1][0] < self.grace(hold) / HELD_BUCKETS:
            held[-1][1] += n
        else:
            held.append([now, float(n)])

    def _claim(self) -> None:
        for bucket in self._held:
            if bucket[1] > 0:
                bucket[1] -= 1
                return

    def waiting(self, now: float, hold: float) -> int:
        """Viewers in the queue: numbers not called yet, and called ones still held."""
        return self.issued - self.called + self.held(now, hold)

    # -- deciding

    def decide(self, now: float, occupancy: int, capacity: int, ticket: tuple[str, int] | None,
               *, idle: float, hold: float, spare: bool = False) -> Verdict:
        """Admit or queue a viewer that would open a session. `occupancy`: sessions the node
        counts against `capacity` now; `ticket`: (epoch, number) of a valid queue ticket;
        `spare`: another node has room for a newcomer, so none is given a number here."""
        free = capacity - occupancy
        self._call(now, free, hold)
        if ticket is not None and ticket[0] == self.epoch and 0 < ticket[1] <= self.issued:
            number = ticket[1]
            if number <= self.called:
                if free > 0:
                    if self.held(now, hold) > 0:
                        self._claim()  # the seat kept for it (or for a number called with it)
                    return Verdict(True)
                return Verdict(False, number=number, position=0,
                               retry_after=self.retry_after(0, idle=idle, hold=hold))
            position = number - self.called
            return Verdict(False, number=number, position=position,
                           retry_after=self.retry_after(position, idle=idle, hold=hold))
        if self.issued == self.called and free - self.held(now, hold) > 0:
            return Verdict(True)
        if spare:
            return Verdict(False)
        self.issued += 1
        position = self.issued - self.called
        return Verdict(False, number=self.issued, position=position, fresh=True,
                       retry_after=self.retry_after(position, idle=idle, hold=hold))


class Seats(Protocol):
    """What admission reads and writes of the session table (sessions.tracker)."""

    @property
    def active(self) -> int: ...
    @property
    def starting(self) -> int: ...
    @property
    def views(self) -> int: ...

    def expire(self, now: float) -> int: ...
    def has(self, key: str, now: float) -> bool: ...
    def touch(self, key: str, now: float, *, title: str, rendition: str | None) -> bool: ...


def admit(seats: Seats, queue: Queue, now: float, *, key: str, explicit: bool, title: str,
          capacity: int, hold: float, idle: float, ticket: tuple[str, int] | None = None,
          spare: bool = False) -> Verdict:
    """The decision for a playlist request of viewer `key` (`explicit`: an id the client sent,
    which may name a session already open here). An admitted new viewer takes its seat at once,
    as a starting session: the next decision, a microsecond later, already counts it."""
    if explicit and seats.has(key, now):
        return Verdict(True, known=True)
    seats.expire(now)  # the count exact at this moment
    occupancy = seats.active + seats.starting
    verdict = queue.decide(now, occupancy, capacity, ticket, idle=idle, hold=hold, spare=spare)
    if verdict.admitted:
        seats.touch(key, now, title=title, rendition=None)
    return verdict


def to_wire(v: Verdict) -> list[int]:
    """A verdict as plain data for the worker hub."""
    return [int(v.admitted), int(v.known), v.number, v.position, v.retry_after, int(v.fresh)]


def from_wire(data: list[int]) -> Verdict:
    admitted, known, number, position, retry_after, fresh = (int(x) for x in data)
    return Verdict(bool(admitted), bool(known), number, position, retry_after, bool(fresh))
