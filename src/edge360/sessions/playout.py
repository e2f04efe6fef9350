"""The play-out rule: until when a session's fetched media keeps its viewer watching.

A player buffers ahead (hls.js: 30 s by default, up to 600 s), so its last request says little
about when it stops playing. A session therefore keeps, per track, the moment its fetched media
has played out: each media segment adds its EXTINF duration (RFC 8216 §4.3.2.1) divided by the
playback rate, chained after the media already fetched, or after now when that has played out
(the buffer ran dry: a stall). CMCD (CTA-5004) can only tighten this: `bl` states the buffer the
player holds, `su` and `bs` say it was empty (start-up, seek, starvation), each with one segment
of slack for a segment still being appended; `pr` gives the rate. The session ends
`idle_timeout` after the later of its last request and that moment
(docs/SESSIONS.md states the rule and its error bound).

Pure: time is the `now` parameter.
"""

from __future__ import annotations

import posixpath

from edge360.sessions.cmcd import Playback

#: tracks a segment can belong to: the main one (video, or muxed audio and video), a separate
#: audio rendition (played beside the main track, not after it), and timed text (never counted)
MAIN, AUDIO, TEXT = 0, 1, 2
#: a media object that carries no play-out time of its own (an init section)
NO_MEDIA = -1

#: the longest media one segment is believed to carry (a whole film in one file): an upstream
#: playlist is not trusted to keep a session open for ever
MAX_MEDIA = 86400.0

_AUDIO_EXTENSIONS = frozenset({".aac", ".m4a", ".mp3", ".ac3", ".ec3"})
_TEXT_EXTENSIONS = frozenset({".vtt", ".webvtt", ".srt", ".ttml"})
_ROLES = {"audio": AUDIO, "subtitles": TEXT, "closed-captions": TEXT}
_OBJECT_TRACKS = {"a": AUDIO, "v": MAIN, "av": MAIN, "c": TEXT, "tt": TEXT, "i": NO_MEDIA}


def track_of(role: str | None, path: str) -> int:
    """The track of a segment: from the EXT-X-MEDIA TYPE of the playlist that lists it
    (RFC 8216 §4.3.4.1; `role` lower-cased, None for a variant stream), else from its extension
    (packed audio, WebVTT); everything else is the main track."""
    if role is not None and role in _ROLES:
        return _ROLES[role]
    ext = posixpath.splitext(path)[1].lower()
    if ext in _AUDIO_EXTENSIONS:
        return AUDIO
    if ext in _TEXT_EXTENSIONS:
        return TEXT
    return MAIN


def track_for(track: int, cmcd: Playback | None) -> int:
    """The track a request counts in: the server's own knowledge, refined by CMCD `ot`."""
    if cmcd is None or cmcd.ot is None:
        return track
    return _OBJECT_TRACKS.get(cmcd.ot, track)


def rate_of(time_scale: float, cmcd: Playback | None) -> float:
    """Real seconds per media second's inverse: the player's own `pr` when it sends one (0 means
    not playing), else `sessions.time_scale` (1 outside compressed replays)."""
    if cmcd is not None and cmcd.pr is not None:
        return cmcd.pr
    return time_scale


def advance(end: float, now: float, media: float, rate: float, cmcd: Playback | None) -> float:
    """The moment a track's fetched media has played out, once a segment of `media` seconds
    arrives at `now`, the track's media having played out at `end` before it.

    Without CMCD: chained after `end`, or after `now` when `end` has passed (a stall), at
    `rate`. CMCD caps the chain (never extends it) at what the player holds: `bl`, or nothing
    when `su` or `bs` say its buffer was empty since its previous request (start-up, a seek,
    starvation); plus this segment, plus one more of its length, because a player counts only
    what it has appended to its media buffer and the previous segment may still be on its way
    there (hls.js measures `bl` so). A paused player (`rate` 0) adds nothing."""
    if not media > 0.0:  # also NaN
        media = 0.0
    elif media > MAX_MEDIA:
        media = MAX_MEDIA
    if rate <= 0:
        return end if end > now else now
    out = (end if end > now else now) + media / rate
    if cmcd is not None:
        held = cmcd.bl if cmcd.bl is not None else (0.0 if cmcd.su or cmcd.bs else None)
        if held is not None:
            out = min(out, now + (held + 2 * media) / rate)
    return out
