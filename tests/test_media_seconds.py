"""The media seconds and track each answer carries, as both roles feed them to the play-out rule:
the origin from its catalog (origin.catalog), the edge from the playlists it relays
(edge.playlists.PlaylistIndex). Segments, init sections, byte ranges, keys, playlists, and a
separate audio rendition known by its master's EXT-X-MEDIA TYPE (not by a file extension)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge360.config.schema import OriginConfig
from edge360.edge.playlists import PlaylistIndex
from edge360.origin import catalog
from edge360.sessions.playout import AUDIO, MAIN, TEXT
from tests.test_titles import build

MASTER = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="aud/en.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="s",NAME="en",URI="subs/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO="a",SUBTITLES="s"
v/index.m3u8
"""
AUDIO_PLAYLIST = """#EXTM3U
#EXT-X-TARGETDURATION:6
#EXT-X-MAP:URI="init.mp4"
#EXTINF:6.0,
a0.m4s
#EXT-X-ENDLIST
"""
VIDEO_PLAYLIST = AUDIO_PLAYLIST.replace("a0.m4s", "v0.m4s")
SUBS_PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\ns0.vtt\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize(("path", "range_header", "seconds", "track"), [
    ("/film/v360/seg0.m4s", "", 4.0, MAIN),
    ("/film/v360/seg1.m4s", "bytes=0-", 3.0, MAIN),
    ("/film/audio/a0.aac", "", 4.0, AUDIO),  # EXT-X-MEDIA TYPE=AUDIO
    ("/film/v360/init.mp4", "", 0.0, MAIN),  # an init section: playback starts, no media
    ("/film/br_360.mp4", "bytes=100-499", 4.0, MAIN),  # a byte-range segment by its offset
    ("/film/br_360.mp4", "bytes=500-999", 4.0, MAIN),
    ("/film/br_360.mp4", "bytes=0-99", 0.0, MAIN),  # its init section
    ("/film/br_360.mp4", "", 0.0, MAIN),  # the whole file: no single segment
    ("/film/keys/k.key", "", None, MAIN),  # a key is no media
    ("/film/master.m3u8", "", None, MAIN),
    ("/film/v360/index.m3u8", "", None, MAIN),
])
def test_origin_catalog(tmp_path: Path, path: str, range_header: str, seconds: float | None,
                        track: int) -> None:
    build(tmp_path)
    cat = catalog.build(str(tmp_path), OriginConfig())
    mf = cat.files[path]
    assert mf.media_seconds(range_header) == seconds
    assert mf.track == track


def test_edge_index_learns_tracks_from_the_master() -> None:
    index = PlaylistIndex()
    index.learn("/film/master.m3u8", "film", MASTER)
    for path, text in (("/film/aud/en.m3u8", AUDIO_PLAYLIST), ("/film/v/index.m3u8",
                                                               VIDEO_PLAYLIST),
                       ("/film/subs/en.m3u8", SUBS_PLAYLIST)):
        index.learn(path, "film", text)
    assert index.playback("/film/aud/a0.m4s", None, "segment") == (6.0, AUDIO)
    assert index.playback("/film/v/v0.m4s", None, "segment") == (6.0, MAIN)
    assert index.playback("/film/subs/s0.vtt", None, "segment") == (6.0, TEXT)
    # what it never saw listed: a segment of unknown length (by extension), or no media
    assert index.playback("/film/v/init.mp4", None, "segment") == (0.0, MAIN)
    assert index.playback("/film/x/other.aac", None, "segment") == (0.0, AUDIO)
    assert index.playback("/film/v/index.m3u8", None, "playlist") == (None, MAIN)
    assert index.playback("/film/k.key", None, "other") == (None, MAIN)
    # a master served again unchanged is not parsed again; a changed one is learnt
    index.learn("/film/master.m3u8", "film", MASTER.replace('TYPE=AUDIO', 'TYPE=VIDEO'))
    index.learn("/film/aud/en.m3u8", "film", AUDIO_PLAYLIST + "\n")
    assert index.playback("/film/aud/a0.m4s", None, "segment") == (6.0, MAIN)
