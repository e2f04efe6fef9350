"""One virtual player's forward buffer: media seconds ahead of its play head, against real time.

Pure: every method takes `now` (real seconds, the caller's monotonic clock). The play head moves
at `speed` media seconds per real second (a replay at --speed N plays N times as fast), so a
buffer of B media seconds lasts B / speed real seconds. Playback starts once the profile's start
threshold is buffered (at least one segment), stalls when the buffer runs dry, and resumes once
the rebuffer threshold is buffered again; stalled time is kept in media-equivalent seconds (real
seconds x speed) so that stall_s / played_s is the stall ratio whatever the speed.
"""

from __future__ import annotations

from edge360.replay.profiles import PlayerProfile


class PlayBuffer:
    """The buffer state at `self.at`; `advance(now)` plays it forward to `now`."""

    def __init__(self, profile: PlayerProfile, speed: float, now: float, *,
                 inherited_s: float = 0.0) -> None:
        """`inherited_s`: media already buffered and playing (a viewer who was watching before
        the replayed window opened); such a viewer has no start-up."""
        self.profile, self.speed = profile, speed
        self.at = now
        self.started = now
        self.ahead = max(inherited_s, 0.0)
        self.playing = self.ahead > 0
        self.first_frame: float | None = now if self.playing else None
        self.played_s = 0.0
        self.stall_s = 0.0
        self.stalled_since: float | None = None
        self.starved = False       # ran dry since the last request (CMCD `bs`)
        self.ended = False         # no further segment will come: play out, never stall

    def advance(self, now: float) -> None:
        """Play from `self.at` to `now`; a buffer that runs dry on the way stalls (or, once the
        title has ended, has played out)."""
        dt = now - self.at
        if dt <= 0:
            return
        if self.playing:
            drain = dt * self.speed
            if drain < self.ahead:
                self.ahead -= drain
                self.played_s += drain
            else:
                dry = self.at + self.ahead / self.speed
                self.played_s += self.ahead
                self.ahead = 0.0
                self.playing = False
                if not self.ended:
                    self.stalled_since = dry
                    self.starved = True
        self.at = now

    def landed(self, now: float, duration: float) -> None:
        """A segment of `duration` media seconds arrived at `now`."""
        self.advance(now)
        self.ahead += duration
        self._resume(now)

    def end(self, now: float) -> None:
        """No further segment will come (EXT-X-ENDLIST without --loop): play what is buffered."""
        self.advance(now)
        self.ended = True
        self._resume(now)

    def _resume(self, now: float) -> None:
        if self.playing or self.ahead <= 0:
            return
        need = self.profile.start_s if self.first_frame is None else self.profile.rebuffer_s
        if self.ahead < need and not self.ended:
            return
        self.playing = True
        if self.first_frame is None:
            self.first_frame = now
        elif self.stalled_since is not None:
            self.stall_s += (now - self.stalled_since) * self.speed
            self.stalled_since = None

    def due(self, now: float, goal: float) -> float:
        """When the next segment is due: now while less than `goal` is buffered, else when the
        play head has eaten the buffer down to `goal` (one segment per segment duration)."""
        self.advance(now)
        if self.ahead < goal or not self.playing:
            return now
        return now + (self.ahead - goal) / self.speed

    def played_out_at(self, now: float) -> float:
        """When what is buffered has played (the end of the title once `ended`)."""
        self.advance(now)
        return now + self.ahead / self.speed if self.playing else now

    def take_starved(self) -> bool:
        """Whether the buffer ran dry since the last call (a request's CMCD `bs`)."""
        starved, self.starved = self.starved, False
        return starved

    @property
    def starting(self) -> bool:
        """Not playing for want of media: start-up, or recovery after running dry (CMCD `su`)."""
        return not self.playing and not self.ended

    def finish(self, now: float) -> None:
        """The viewer leaves at `now`: a stall still going on is counted up to here."""
        self.advance(now)
        if self.stalled_since is not None and self.first_frame is not None:
            self.stall_s += (now - self.stalled_since) * self.speed
            self.stalled_since = now
