"""How much media a virtual player keeps ahead of its play head: the buffering profiles of the
players the audience uses (`--player-profile`), each with the source of its numbers.

Pure. A player fetches its next segment while the media buffered ahead of the play head is below
its goal (`PlayerProfile.goal_for`), so it fills to the goal at link speed after it starts and
then fetches one segment per segment duration. docs/FIRST-DAY.md explains the profiles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlayerProfile:
    """One player's buffering rule, in media seconds and bytes."""

    name: str
    goal_s: float            # the forward buffer it keeps (hls.js maxBufferLength)
    max_s: float             # never more ahead than this (hls.js maxMaxBufferLength)
    max_bytes: int           # the byte bound of the forward buffer; 0: none
    #: hls.js lets the byte bound RAISE the goal for a low bitrate (up to max_s); the others stop
    #: loading when the bytes are reached, so there it can only lower the goal
    bytes_raise_goal: bool
    start_s: float           # media buffered before the first frame (0: one segment)
    rebuffer_s: float        # media buffered before play resumes after a stall (0: one segment)
    source: str

    def goal_for(self, bitrate: float) -> float:
        """Seconds ahead the player fetches up to while playing a rendition of `bitrate` bit/s
        (its BANDWIDTH attribute, as hls.js reads the level's bitrate)."""
        if bitrate <= 0 or self.max_bytes <= 0:
            return min(self.goal_s, self.max_s)
        by_bytes = 8 * self.max_bytes / bitrate
        if self.bytes_raise_goal:
            return min(max(by_bytes, self.goal_s), self.max_s)
        return min(self.goal_s, by_bytes, self.max_s)


HLSJS = PlayerProfile(
    name="hlsjs", goal_s=30.0, max_s=600.0, max_bytes=60 * 1000 * 1000, bytes_raise_goal=True,
    start_s=0.0, rebuffer_s=0.0,
    source="hls.js API defaults (maxBufferLength 30, maxMaxBufferLength 600, maxBufferSize "
           "60 MB); its stream controller loads while the buffer is under "
           "min(max(8 x maxBufferSize / level bitrate, maxBufferLength), maxMaxBufferLength) and "
           "plays as soon as a fragment is buffered")

EXOPLAYER = PlayerProfile(
    name="exoplayer", goal_s=50.0, max_s=50.0,
    # DefaultLoadControl's target for a video and an audio renderer: 2000 and 200 x 64 KiB
    max_bytes=(2000 + 200) * 64 * 1024, bytes_raise_goal=False, start_s=2.5, rebuffer_s=5.0,
    source="ExoPlayer DefaultLoadControl defaults (DEFAULT_MIN_BUFFER_MS = DEFAULT_MAX_BUFFER_MS "
           "= 50,000, DEFAULT_BUFFER_FOR_PLAYBACK_MS 2,500, "
           "DEFAULT_BUFFER_FOR_PLAYBACK_AFTER_REBUFFER_MS 5,000, target bytes from its video "
           "and audio buffer sizes)")

AVPLAYER = PlayerProfile(
    name="avplayer", goal_s=60.0, max_s=60.0, max_bytes=0, bytes_raise_goal=False,
    start_s=0.0, rebuffer_s=0.0,
    source="AVPlayerItem.preferredForwardBufferDuration defaults to 0, which Apple documents as "
           "'the player chooses an appropriate level of buffering' without a figure; 60 s ahead "
           "is this profile's assumption, to be replaced by a measurement on a device")

PROFILES: dict[str, PlayerProfile] = {p.name: p for p in (HLSJS, AVPLAYER, EXOPLAYER)}
