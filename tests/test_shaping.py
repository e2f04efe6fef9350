"""Shaping by egress, the pure rule (hls.shape): the cap past 90 % of the budget, the variants a
new viewer's master keeps (each codec family its lowest rung at least), the ladder labels the
sessions count under, and the projected egress."""

from __future__ import annotations

import pytest

from edge360.hls import shape
from edge360.http.masters import cmsd

MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-STREAM-INF:BANDWIDTH=8000000,CODECS="hvc1.1.6.L150.90,mp4a.40.2",RESOLUTION=3840x2160
hevc_2160p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS="hvc1.1.6.L120.90,mp4a.40.2",RESOLUTION=1920x1080
hevc_1080p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS="avc1.640028,mp4a.40.2",RESOLUTION=1920x1080
h264_1080p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1500000,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720
h264_720p/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="hevc_2160p/iframes.m3u8"
"""


@pytest.mark.parametrize(("projected", "limit", "expected"), [
    (0, 0, None),                       # no budget: never shaping
    (80e6, 100e6, None),                # under 90 %
    (90e6, 100e6, None),                # at 90 %: not past it
    (91e6, 100e6, 8_000_000),           # past it, 9 Mbit/s left: the top rung still fits
    (94e6, 100e6, 5_000_000),           # 6 left: down to the first rung that fits
    (99e6, 100e6, 1_500_000),           # 1 left: nothing fits, the lowest rung
    (150e6, 100e6, 1_500_000),          # over the budget: the lowest rung
])
def test_cap(projected: float, limit: int, expected: int | None) -> None:
    rungs = [8_000_000, 4_000_000, 5_000_000, 1_500_000]
    assert shape.cap(rungs, projected, limit) == expected


def test_shaped_keeps_what_fits_and_each_familys_lowest_rung() -> None:
    text, removed = shape.shaped(MASTER, "/demo/master.m3u8", 1_500_000)
    assert removed == 2  # HEVC 2160p and H.264 1080p; HEVC 1080p is HEVC's lowest rung
    assert "hevc_2160p/index.m3u8" not in text and "h264_1080p/index.m3u8" not in text
    assert "hevc_1080p/index.m3u8" in text and "h264_720p/index.m3u8" in text
    assert 'URI="hevc_2160p/iframes.m3u8"' in text  # trick play stays
    assert shape.shaped(MASTER, "/demo/master.m3u8", 8_000_000) == (MASTER, 0)


def test_ladder_labels_as_sessions_count_them() -> None:
    assert shape.ladder(MASTER, "/demo/master.m3u8", "demo") == {
        "hevc_2160p": 8_000_000, "hevc_1080p": 4_000_000, "h264_1080p": 5_000_000,
        "h264_720p": 1_500_000}
    flat = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100\nlow.m3u8\n"
    assert shape.ladder(flat, "/t/master.m3u8", "t") == {"low": 100}


def test_projected_egress_sums_the_active_renditions() -> None:
    active = [(("demo", "hevc_2160p"), 3), (("demo", "none"), 5), (("demo", "h264_720p"), 2)]
    rungs = {("demo", "hevc_2160p"): 8_000_000, ("demo", "h264_720p"): 1_500_000}
    assert shape.projected(active, rungs) == 27_000_000


def test_cmsd_dynamic_names_the_cap_in_kbps() -> None:
    assert cmsd(1_500_000) == '"edge360";mb=1500'
    assert cmsd(10) == '"edge360";mb=1'
