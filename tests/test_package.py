"""Tests of the HLS packager (edge360.package, edge360.ffmpeg) and of the bundled demo title."""

from __future__ import annotations

import argparse
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import UsageError
from edge360.hls import ffmpeg
from edge360.hls.package import (
    DEFAULT_LADDER,
    ProgressBar,
    Rung,
    add_arguments,
    package,
    parse_ladder,
    peak_bitrate,
    plan_ladder,
    run,
)
from edge360.hls.playlist import parse_master, parse_media
from edge360.hls.titles import check_title
from tests.tools import require_tool

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "media" / "demo"
SEG = 2.0


# ---------------------------------------------------------------- pure parts

@pytest.mark.parametrize(("spec", "expected"), [
    ("2160p,1080p,720p,480p", [(2160, 12000, 128), (1080, 5000, 128), (720, 2800, 128),
                               (480, 1200, 96)]),
    ("360p:300k:64k, 720p", [(720, 2800, 128), (360, 300, 64)]),
    ("1080p:2.5M", [(1080, 2500, 128)]),
    ("900p:4000k", [(900, 4000, 128)]),
])
def test_parse_ladder(spec: str, expected: list[tuple[int, int, int]]) -> None:
    assert [(r.height, r.video_kbps, r.audio_kbps) for r in parse_ladder(spec)] == expected


@pytest.mark.parametrize("spec", ["", ",", "4k", "900p", "720p:fast", "720p,720p:1M",
                                  "720p:1k:1k:1k", "720p:0k"])
def test_parse_ladder_refuses(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_ladder(spec)


LADDER = parse_ladder("720p,480p,360p")


@pytest.mark.parametrize(("source", "heights"), [
    (2160, [720, 480, 360]),
    (720, [720, 480, 360]),
    (719, [480, 360]),
    (480, [480, 360]),
    (360, [360]),
    (241, [240]),  # smaller than every rung: one rung at its own (even) height
    (100, [100]),
])
def test_plan_ladder_never_upscales(source: int, heights: list[int]) -> None:
    assert [r.height for r in plan_ladder(LADDER, source)] == heights


@given(st.lists(st.sampled_from(DEFAULT_LADDER), min_size=1, unique=True),
       st.integers(min_value=2, max_value=5000))
def test_plan_ladder_property(ladder: list[Rung], source: int) -> None:
    plan = plan_ladder(ladder, source)
    assert plan
    assert all(r.height <= source and r.height % 2 == 0 for r in plan)
    assert [r.height for r in plan] == sorted((r.height for r in plan), reverse=True)
    tallest_fitting = [r for r in ladder if r.height <= source]
    assert len(plan) == max(1, len(tallest_fitting))


@pytest.mark.parametrize(("durations", "sizes", "target", "peak"), [
    ([6, 6, 6], [600, 900, 300], 6, 1200),       # single segments are the windows
    ([2, 2, 2, 2], [100, 500, 100, 100], 2, 2000),
    ([2, 2, 2, 2], [100, 500, 100, 100], 6, 1200),  # windows of 2-4 segments (3 s to 9 s)
    ([1.0], [1000], 6, 8000),                    # too short for any window: the segment itself
])
def test_peak_bitrate(durations: list[float], sizes: list[int], target: float,
                      peak: int) -> None:
    assert peak_bitrate(durations, sizes, target) == peak


@given(st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=40),
       st.integers(min_value=1, max_value=10))
def test_peak_bitrate_at_least_average(sizes: list[int], target: int) -> None:
    durations = [float(target)] * len(sizes)
    peak = peak_bitrate(durations, sizes, target)
    assert peak >= math.floor(sum(sizes) * 8 / sum(durations))
    assert peak == math.ceil(max(sizes) * 8 / target)


@pytest.mark.parametrize(("stream", "codecs"), [
    (b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x28\xac", "avc1.640028"),
    (b"\x00\x00\x01\x67\x4d\x40\x1f\x00", "avc1.4d401f"),
    (b"\x00\x00\x01\x65\x88\x84\x00\x00", None),  # a slice, no SPS
    (b"", None),
])
def test_codecs_from_sps(stream: bytes, codecs: str | None) -> None:
    assert ffmpeg._sps_codecs(stream) == codecs


def test_progress_bar_on_a_pipe_prints_tenths() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "package")
    for i in range(1001):
        bar(i / 1000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "package   0%" and lines[-1] == "package 100%"
    assert len(lines) == 11


# ---------------------------------------------------------------- real encodes

def _ffprobe(*args: str) -> str:
    return subprocess.run([require_tool("ffprobe"), "-v", "error", *args], capture_output=True,
                          check=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seconds of 854x480 test pattern at 25 fps with a tone."""
    path = tmp_path_factory.mktemp("src") / "source.mp4"
    subprocess.run([require_tool("ffmpeg"), "-nostdin", "-v", "error",
                    "-f", "lavfi", "-i", "testsrc2=size=854x480:rate=25:duration=5",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
                    "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-shortest",
                    str(path)], check=True, timeout=300)
    return path


@pytest.fixture(scope="module", params=["ts", "fmp4"])
def title(request: pytest.FixtureRequest, source: Path,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[float]]:
    require_tool("ffprobe")
    fmt = request.param
    seen: list[float] = []
    out = package(source, tmp_path_factory.mktemp(fmt) / "title", ladder=LADDER,
                  segment_seconds=SEG, fmt=fmt, progress=seen.append)
    return out, fmt, seen


def _variants(title_dir: Path, name: str = "master.m3u8") -> list[tuple[str, object]]:
    master = parse_master((title_dir / name).read_text())
    return [(v.uri, v) for v in master.variants]


def test_layout_and_no_upscale(title: tuple[Path, str, list[float]]) -> None:
    out, _fmt, _ = title
    assert sorted(p.name for p in out.iterdir()) == ["360p", "480p", "master.m3u8",
                                                     "master_br.m3u8"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no build left over


def test_progress_reported(title: tuple[Path, str, list[float]]) -> None:
    _out, _fmt, seen = title
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_master_attributes(title: tuple[Path, str, list[float]]) -> None:
    out, fmt, _ = title
    master = parse_master((out / "master.m3u8").read_text())
    assert [v.resolution for v in master.variants] == [(854, 480), (640, 360)]
    for v in master.variants:
        assert v.bandwidth is not None and v.average_bandwidth is not None
        assert v.bandwidth >= v.average_bandwidth > 0
        assert v.frame_rate == 25.0
        assert v.codecs is not None
        m = re.fullmatch(r"avc1\.6400([0-9a-f]{2}),mp4a\.40\.2", v.codecs)
        assert m is not None, v.codecs
        rung = out / v.uri.split("/")[0]
        level = _ffprobe("-select_streams", "v:0", "-show_entries", "stream=level",
                         "-of", "csv=p=0", str(rung / f"single.{'ts' if fmt == 'ts' else 'mp4'}"))
        assert int(m.group(1), 16) == int(level.split()[0])
        # AVERAGE-BANDWIDTH is measured: the single file's bytes over the playlist's duration
        single = rung / ("single.ts" if fmt == "ts" else "single.mp4")
        init = (rung / "init.mp4").stat().st_size if fmt == "fmp4" else 0
        media = parse_media((rung / "index.m3u8").read_text())
        seconds = sum(s.duration for s in media.segments)
        assert v.average_bandwidth == math.ceil((single.stat().st_size - init) * 8 / seconds)
    br = parse_master((out / "master_br.m3u8").read_text())
    assert [(v.bandwidth, v.average_bandwidth, v.codecs) for v in br.variants] == \
        [(v.bandwidth, v.average_bandwidth, v.codecs) for v in master.variants]


def _decodable(rung: Path, name: str, fmt: str) -> Path:
    """A file ffprobe can read for one segment (an fmp4 fragment needs its init section first)."""
    if fmt == "ts":
        return rung / name
    joined = rung.parent.parent / f"probe-{rung.name}-{name}.mp4"
    joined.write_bytes((rung / "init.mp4").read_bytes() + (rung / name).read_bytes())
    return joined


def test_every_segment_starts_with_a_keyframe_and_is_high(
        title: tuple[Path, str, list[float]]) -> None:
    out, fmt, _ = title
    for rung in (out / "480p", out / "360p"):
        media = parse_media((rung / "index.m3u8").read_text())
        assert [s.duration for s in media.segments] == [2.0, 2.0, 1.0]
        for seg in media.segments:
            path = _decodable(rung, seg.path, fmt)
            first = _ffprobe("-select_streams", "v:0", "-read_intervals", "%+#1",
                             "-show_entries", "frame=key_frame,pict_type", "-of", "csv=p=0",
                             str(path))
            assert first.split()[0].split(",")[:2] == ["1", "I"], (seg.path, first)
            profiles = set(_ffprobe("-select_streams", "v:0", "-show_entries", "stream=profile",
                                    "-of", "csv=p=0", str(path)).split())
            assert profiles == {"High"}


def test_byte_range_variant_carries_the_same_bits(title: tuple[Path, str, list[float]]) -> None:
    out, fmt, _ = title
    for rung in (out / "480p", out / "360p"):
        seg = parse_media((rung / "index.m3u8").read_text())
        br = parse_media((rung / "index_br.m3u8").read_text())
        single = (rung / br.segments[0].path).read_bytes()
        assert [s.duration for s in seg.segments] == [s.duration for s in br.segments]
        expected_offset = 0
        if fmt == "fmp4":
            assert br.segments[0].init_range == (0, (rung / "init.mp4").stat().st_size)
            expected_offset = (rung / "init.mp4").stat().st_size
            assert single[:expected_offset] == (rung / "init.mp4").read_bytes()
        for s, b in zip(seg.segments, br.segments, strict=True):
            assert b.byterange is not None and b.byterange[0] == expected_offset
            offset, length = b.byterange
            assert single[offset:offset + length] == (rung / s.path).read_bytes()
            expected_offset += length
        assert expected_offset == len(single)
    for name in ("master.m3u8", "master_br.m3u8"):
        proc = subprocess.run([require_tool("ffmpeg"), "-nostdin", "-v", "error", "-i",
                               str(out / name), "-map", "0", "-c", "copy", "-f", "null", "-"],
                              capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_repackaging_replaces_an_earlier_title(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    out = tmp_path / "t"
    package(source, out, ladder=parse_ladder("360p"), segment_seconds=SEG)
    package(source, out, ladder=parse_ladder("240p"), segment_seconds=SEG)
    assert sorted(p.name for p in out.iterdir()) == ["240p", "master.m3u8", "master_br.m3u8"]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


# ---------------------------------------------------------------- refusals

def test_text_input_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    require_tool("ffprobe")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a film\n" * 50)
    out = tmp_path / "title"
    with pytest.raises(UsageError, match=r"notes\.txt: not a video file"):
        package(text, out, ladder=LADDER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    out.mkdir()
    with pytest.raises(UsageError):
        package(text, out, ladder=LADDER)
    assert list(out.iterdir()) == []


def test_missing_input_and_occupied_destination(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    with pytest.raises(UsageError, match="no such file"):
        package(tmp_path / "absent.mp4", tmp_path / "t", ladder=LADDER)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        package(source, busy, ladder=LADDER)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_ffmpeg_missing_gives_the_clear_line(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UsageError) as info:
        package(tmp_path / "in.mp4", tmp_path / "t")
    assert str(info.value) == "ffmpeg not found (install the ffmpeg package)"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(UsageError, match="ffmpeg not found"):
        run(parser.parse_args([str(tmp_path / "in.mp4"), "--out", str(tmp_path / "t")]))
    proc = subprocess.run([sys.executable, "-m", "edge360", "package", "in.mp4", "--out", "t"],
                          cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "package: ffmpeg not found (install the ffmpeg package)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


# ---------------------------------------------------------------- the bundled demo title

def test_demo_title_is_a_four_rung_4k_ladder_under_25_mb() -> None:
    assert (DEMO / "master.m3u8").is_file(), "run scripts/make_demo.sh"
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 25_000_000
    for name in ("master.m3u8", "master_br.m3u8"):
        master = parse_master((DEMO / name).read_text())
        assert [v.resolution for v in master.variants] == \
            [(3840, 2160), (1920, 1080), (1280, 720), (640, 360)]
        bandwidths = [v.bandwidth or 0 for v in master.variants]
        assert bandwidths == sorted(bandwidths, reverse=True) and bandwidths[-1] > 0
    check_title(DEMO)
