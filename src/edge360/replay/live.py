"""A virtual player following a live or event playlist (RFC 8216 §6.3.3-6.3.5): join three
target durations from the end, reload every target duration (half of one after a reload that
changed nothing), fetch each new segment once by media sequence number, jump to the live edge
when the window has slid past the next one (counted as a skip), and play out once EXT-X-ENDLIST
appears. The player's own steps (fetching, sleeping, switching) are replay.player's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edge360.replay.buffer import PlayBuffer
from edge360.replay.hls import MediaPlaylist

if TYPE_CHECKING:
    from edge360.replay.player import VirtualPlayer

#: a bound on the steps of one live visit besides its watch time (as replay.player's)
MAX_STEPS = 1_000_000


async def follow(self: VirtualPlayer, rendition: str, playlist: MediaPlaylist, loaded: float,
                 buffer: PlayBuffer) -> None:
    """Follow a live or event playlist (RFC 8216 §6.3.4-6.3.5) from its live edge until the
    viewer leaves or the stream has ended and played out. Segments appear only as fast as
    the stream makes them, so the buffer stays within the live window."""
    cfg, st = self.cfg, self.stats
    sequence = playlist.live_edge()
    reload_at = loaded + playlist.reload_s / cfg.speed   # measured from the load's start
    for _ in range(MAX_STEPS):
        if time.monotonic() >= self.quit_at:
            return
        place = playlist.place(sequence)
        if place == "over":         # EXT-X-ENDLIST and every segment fetched: play it out
            buffer.end(time.monotonic())
            await self._sleep_until(buffer.played_out_at(time.monotonic()))
            return
        if place == "behind":
            # the window slid past the next segment: rejoin at the live edge, as players do
            st.live_skips += 1
            sequence = playlist.live_edge()
            continue
        seg = playlist.segment(sequence)     # None: not published yet ("ahead")
        due = None if seg is None else max(
            buffer.due(time.monotonic(), self._goal(rendition)), self.link_free)
        # fetch when the buffer wants the segment before the next reload is due; a full
        # buffer still reloads on time, as a player keeps its playlist fresh
        if seg is not None and due is not None and (not playlist.live or due <= reload_at):
            if not await self._sleep_until(due):
                return
            sequence += 1
            if not await self._segment(seg, rendition, buffer):
                continue
            change = await self._switch(rendition)
            if change is not None:
                # go on with the same media sequence number in the new rendition: common
                # live packagers number the renditions alike, though RFC 8216 §6.3 tells
                # clients not to assume it; a server that differs would need matching by
                # EXT-X-PROGRAM-DATE-TIME instead
                rendition, playlist, began = change
                reload_at = began + playlist.reload_s / cfg.speed
            continue
        if not await self._sleep_until(reload_at):
            return
        began = time.monotonic()
        reloaded = await self._media(rendition)
        st.reloads += 1
        if reloaded is not None and reloaded != playlist:
            playlist = reloaded
            reload_at = began + playlist.reload_s / cfg.speed
        else:
            # §6.3.4: unchanged (or failed), so retry after half a target duration
            reload_at = time.monotonic() + playlist.reload_s / 2 / cfg.speed

