"""The packager's pure parts: the ladder and its planning, the step rule, chunking, CODECS strings
from codec configuration bytes, I-frame byte ranges, peak bit rates and the progress line."""

from __future__ import annotations

import io
import itertools
import math
import struct
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import UsageError
from edge360.hls import codecs, encodeargs, ladder
from edge360.hls.ffmpeg import Packet
from edge360.hls.progress import ProgressBar, clock_text
from edge360.hls.rendition import keyframe_ranges, peak_bitrate
from edge360.hls.runner import Job, Tracker
from edge360.hls.workdir import Workdir
from tests.fixtures.clock import FakeClock

# ---------------------------------------------------------------- the ladder


def test_default_ladders_follow_the_authoring_table() -> None:
    h264 = {r.name: r.video_kbps for r in ladder.default_ladder("h264")}
    hevc = {r.name: r.video_kbps for r in ladder.default_ladder("hevc")}
    assert h264 == {"1080p": 6000, "720p": 3000, "540p": 2000, "480p": 1100, "432p": 730,
                    "360p": 365}
    assert hevc == {"2160p": 11600, "1440p": 8100, "1080p": 4500, "720p": 2400, "540p": 1600,
                    "480p": 800, "432p": 570, "360p": 290}


@pytest.mark.parametrize("codec", ladder.CODECS)
def test_default_targets_have_no_hole(codec: str) -> None:
    rates = sorted(r.video_kbps for r in ladder.default_ladder(codec))
    assert all(b <= 2 * a for a, b in itertools.pairwise(rates)), rates


@pytest.mark.parametrize(("spec", "codecs_", "expected"), [
    ("1080p,720p", ("h264",), {"h264": [(1080, 6000, 128), (720, 3000, 128)]}),
    ("360p:300k:64k, 720p", ("h264", "hevc"),
     {"h264": [(720, 3000, 128), (360, 300, 64)], "hevc": [(720, 2400, 128), (360, 300, 64)]}),
    ("hevc/2160p:9M,1080p:2.5M", ("h264", "hevc"),
     {"h264": [(1080, 2500, 128)], "hevc": [(2160, 9000, 128), (1080, 2500, 128)]}),
    ("900p:4000k", ("hevc",), {"hevc": [(900, 4000, 128)]}),
    ("2160p", ("h264",), {"h264": [(2160, 15467, 128)]}),  # asked for by name: 4/3 of HEVC's
])
def test_parse_ladder(spec: str, codecs_: tuple[str, ...],
                      expected: dict[str, list[tuple[int, int, int]]]) -> None:
    parsed = ladder.parse_ladder(spec, codecs_)
    assert {c: [(r.height, r.video_kbps, r.audio_kbps) for r in rungs]
            for c, rungs in parsed.items()} == expected


@pytest.mark.parametrize(("spec", "codecs_"), [
    ("", ("h264",)), (",", ("h264",)), ("4k", ("h264",)), ("900p", ("h264",)),
    ("720p:fast", ("h264",)), ("720p,720p:1M", ("h264",)), ("720p:1k:1k:1k", ("h264",)),
    ("720p:0k", ("h264",)), ("hevc/720p", ("h264",)), ("hevc/720p", ("h264", "hevc")),
    ("av1/720p", ("h264",)),
])
def test_parse_ladder_refuses(spec: str, codecs_: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        ladder.parse_ladder(spec, codecs_)


@pytest.mark.parametrize(("spec", "expected"), [
    ("h264", ("h264",)), ("hevc,h264", ("hevc", "h264")), (" H264 , HEVC ", ("h264", "hevc")),
])
def test_parse_codecs(spec: str, expected: tuple[str, ...]) -> None:
    assert ladder.parse_codecs(spec) == expected


@pytest.mark.parametrize("spec", ["", "av1", "h264,h264", "h265"])
def test_parse_codecs_refuses(spec: str) -> None:
    with pytest.raises(UsageError):
        ladder.parse_codecs(spec)


LADDER = ladder.parse_ladder("720p,480p,360p", ("h264",))


@pytest.mark.parametrize(("size", "sar", "expected"), [
    ((3840, 2160), Fraction(1), [(1280, 720), (854, 480), (640, 360)]),
    ((1280, 720), Fraction(1), [(1280, 720), (854, 480), (640, 360)]),
    ((1278, 718), Fraction(1), [(854, 480), (640, 360)]),
    ((1920, 800), Fraction(1), [(1280, 534), (854, 356), (640, 266)]),  # scope: fit the width
    ((720, 576), Fraction(16, 15), [(640, 480), (480, 360)]),  # anamorphic: square pixels out
    ((640, 360), Fraction(1), [(640, 360)]),
    ((426, 240), Fraction(1), [(426, 240)]),  # smaller than every rung: its own size
    ((101, 75), Fraction(1), [(100, 74)]),  # never a pixel more than the source
])
def test_plan_never_upscales(size: tuple[int, int], sar: Fraction,
                             expected: list[tuple[int, int]]) -> None:
    targets = ladder.plan(LADDER, *size, sar)
    assert [(t.width, t.height) for t in targets] == expected
    assert all(t.codec == "h264" and t.folder == f"h264_{t.rung.name}" for t in targets)


@given(st.integers(min_value=2, max_value=8000), st.integers(min_value=2, max_value=5000),
       st.sampled_from([Fraction(1), Fraction(4, 3), Fraction(8, 9), Fraction(16, 11)]))
def test_plan_property(width: int, height: int, sar: Fraction) -> None:
    ladders = {c: ladder.default_ladder(c) for c in ladder.CODECS}
    targets = ladder.plan(ladders, width, height, sar)
    for codec in ladder.CODECS:
        mine = [t for t in targets if t.codec == codec]
        assert mine
        assert all(t.width % 2 == 0 and t.height % 2 == 0 for t in mine)
        assert all(t.height <= max(2, height) and t.width <= max(2, width * sar) for t in mine)
        assert [t.height for t in mine] == sorted((t.height for t in mine), reverse=True)
        assert len({t.folder for t in mine}) == len(mine)


def _measured(name: str, height: int, peak: int, *, cap: int = 1000, abr: int = 0,
              audio: int = 0, codec: str = "hevc") -> ladder.Measured:
    target = ladder.Target(codec, ladder.Rung(name, height, cap, audio // 1000), 16, 16,
                           abr_kbps=abr)
    return ladder.Measured(target, peak, peak * 9 // 10, audio)


@pytest.mark.parametrize(("peaks", "hole"), [
    ([100, 200, 400], False), ([100, 201, 400], True), ([900, 100, 200], True), ([5], False),
    ([400, 390, 200, 100], False),
])
def test_has_hole(peaks: list[int], hole: bool) -> None:
    assert ladder.has_hole(peaks) is hole


def test_a_ladder_without_holes_is_left_alone() -> None:
    rungs = [_measured("a", 360, 100_000), _measured("b", 720, 199_000),
             _measured("c", 1080, 390_000)]
    assert ladder.rebalance(rungs) == []


@given(st.lists(st.integers(min_value=50_000, max_value=50_000_000), min_size=1, max_size=10))
def test_balanced_peaks_leave_no_step_above_the_limit(unsorted: list[int]) -> None:
    peaks = sorted(unsorted)
    balanced = ladder.balanced_peaks(peaks, 1.8)
    assert len(balanced) == len(peaks)
    assert all(a <= b * (1 + 1e-9) <= 1.8 * a * (1 + 2e-9)
               for a, b in itertools.pairwise(balanced))  # in order, and no hole
    # already within the limit: nothing moves
    if all(b <= 1.8 * a for a, b in itertools.pairwise(peaks)):
        assert balanced == pytest.approx(peaks)


def test_balanced_peaks_share_a_hole_and_spare_the_bottom_rung() -> None:
    # a grainy 4K film: HEVC at CRF is cheap up to 1440p, expensive at 2160p
    peaks = [194, 213, 269, 300, 465, 996, 2012, 10927]
    balanced = ladder.balanced_peaks(peaks, 1.8)
    moved = [b / p for b, p in zip(balanced, peaks, strict=True)]
    assert moved[:3] == pytest.approx([1, 1, 1])  # the bottom and the rungs near it stay
    assert all(m > 1.05 for m in moved[3:7]) and moved[7] < 0.5  # the hole's rungs share it
    assert balanced[7] / balanced[6] == pytest.approx(1.8)


def test_rebalance_sees_the_ladder_as_a_player_does() -> None:
    # 432p came out far below 360p: sorted by peak, 360p is 2.5x above it, then 720p
    rungs = [_measured("360p", 360, 100_000), _measured("432p", 432, 40_000),
             _measured("720p", 720, 180_000)]
    again = ladder.rebalance(rungs)
    assert again and "432p" not in {t.rung.name for t in again}  # the lowest is spared


def test_rebalance_lowers_with_the_cap_and_raises_with_an_average_rate() -> None:
    rungs = [_measured("360p", 360, 200_000, cap=290, audio=64_000),
             _measured("720p", 720, 300_000, cap=2400, audio=64_000),
             _measured("1080p", 1080, 5_000_000, cap=4500, audio=64_000)]
    again = {t.rung.name: t for t in ladder.rebalance(rungs)}
    assert set(again) == {"720p", "1080p"}  # the bottom rung stays
    assert again["720p"].abr_kbps > 0 and again["720p"].cap_kbps == 0
    assert again["1080p"].abr_kbps == 0 and 0 < again["1080p"].cap_kbps < 4500
    assert again["720p"].rate_name.startswith("a") and again["1080p"].rate_name.startswith("c")
    # a rung already at an average rate keeps that mode, scaled
    abr = [_measured("360p", 360, 200_000), _measured("720p", 720, 900_000, abr=800)]
    (moved,) = ladder.rebalance(abr)
    assert moved.rung.name == "720p" and 0 < moved.abr_kbps < 800


@pytest.mark.parametrize(("target", "expected"), [
    (ladder.Target("h264", ladder.Rung("720p", 720, 3000, 128), 1280, 720),
     ["-crf", "23", "-maxrate", "3000k", "-bufsize", "6000k"]),
    (ladder.Target("hevc", ladder.Rung("720p", 720, 3000, 128), 1280, 720, cap_kbps=2000),
     ["-crf", "28", "-maxrate", "2000k", "-bufsize", "4000k"]),
    (ladder.Target("hevc", ladder.Rung("720p", 720, 3000, 128), 1280, 720, abr_kbps=2500),
     ["-b:v", "2500k", "-maxrate", "3750k", "-bufsize", "7500k"]),
])
def test_rate_args(target: ladder.Target, expected: list[str]) -> None:
    assert encodeargs.rate_args(target, 150, Fraction(25), 23) == expected
    # one-second segments: a one-second buffer
    assert encodeargs.rate_args(target, 25, Fraction(25), 23)[-1] == expected[-3]


def test_groups_balance_the_encodes_of_a_chunk() -> None:
    from edge360.hls.package import _cost, _groups
    targets = ladder.plan({c: ladder.default_ladder(c) for c in ladder.CODECS}, 3840, 2160)
    for count in (1, 2, 3, 40):
        groups = _groups(targets, count)
        assert len(groups) == min(count, len(targets)) and all(groups)
        assert sorted(t.folder for g in groups for t in g) == sorted(t.folder for t in targets)
    two = [sum(_cost(t) for t in g) for g in _groups(targets, 2)]
    assert max(two) / min(two) < 1.5  # 2160p HEVC alone against the rest, about


# ---------------------------------------------------------------- chunks and segments

@pytest.mark.parametrize(("fps", "seconds", "frames"), [
    (Fraction(25), 6.0, 150), (Fraction(24000, 1001), 6.0, 144), (Fraction(30), 0.5, 15),
    (Fraction(1), 0.5, 1), (Fraction(60000, 1001), 2.0, 120),
])
def test_segment_frames(fps: Fraction, seconds: float, frames: int) -> None:
    assert encodeargs.segment_frames(fps, seconds) == frames


@given(st.integers(min_value=1, max_value=100_000), st.integers(min_value=1, max_value=5000))
def test_chunks_cover_the_source_once(total: int, per_chunk: int) -> None:
    parts = encodeargs.chunks(total, per_chunk)
    assert parts[0].first == 0 and parts[-1].frames is None
    for a, b in itertools.pairwise(parts):
        assert a.frames == per_chunk and b.first == a.first + per_chunk
    assert total - parts[-1].first >= min(total, 2)  # never a last chunk of one frame


def test_concat_list_gives_exact_durations() -> None:
    text = encodeargs.concat_list([("v1k-00000.mp4", Fraction(48 * 1001, 24000)),
                                   ("v1k-00001.mp4", None)])
    assert text == ("ffconcat version 1.0\nfile 'v1k-00000.mp4'\nduration 2.002000000\n"
                    "file 'v1k-00001.mp4'\n")


# ---------------------------------------------------------------- CODECS from bytes

def _hvcc(space: int, tier: int, profile: int, compat: int, constraint: bytes,
          level: int) -> bytes:
    return bytes([1, space << 6 | tier << 5 | profile]) + struct.pack(">I", compat) + \
        constraint + bytes([level]) + bytes(10)


@pytest.mark.parametrize(("hvcc", "expected"), [
    # ISO/IEC 14496-15 Annex E's examples, and x265's Main profile at level 3.1
    (_hvcc(0, 0, 1, 0x60000000, bytes([0x90, 0, 0, 0, 0, 0]), 93), "hvc1.1.6.L93.90"),
    (_hvcc(0, 0, 2, 0x20000000, bytes([0xB0, 0, 0, 0, 0, 0]), 120), "hvc1.2.4.L120.B0"),
    (_hvcc(1, 1, 1, 0x60000000, bytes([0x90, 0, 0x01, 0, 0, 0]), 150),
     "hvc1.A1.6.H150.90.00.01"),
    (_hvcc(0, 0, 1, 0x60000000, bytes(6), 93), "hvc1.1.6.L93"),
    (b"\x01\x01", None),
])
def test_hevc_codecs(hvcc: bytes, expected: str | None) -> None:
    assert codecs.hevc_codecs("hvc1", hvcc) == expected


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _init(entry: bytes, config_kind: bytes, config: bytes) -> bytes:
    sample_entry = _box(entry, bytes(78) + _box(b"pasp", bytes(8)) + _box(config_kind, config))
    stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + sample_entry)
    tree = _box(b"trak", _box(b"tkhd", bytes(84)) + _box(b"mdia", _box(b"minf", _box(
        b"stbl", stsd))))
    return _box(b"ftyp", b"iso6") + _box(b"moov", _box(b"mvhd", bytes(100)) + tree)


def test_init_codecs_walks_to_the_sample_entry() -> None:
    avcc = bytes([1, 0x64, 0x00, 0x28, 0xFF])
    assert codecs.init_codecs(_init(b"avc1", b"avcC", avcc)) == "avc1.640028"
    hvcc = _hvcc(0, 0, 1, 0x60000000, bytes([0x90, 0, 0, 0, 0, 0]), 150)
    assert codecs.init_codecs(_init(b"hvc1", b"hvcC", hvcc)) == "hvc1.1.6.L150.90"
    assert codecs.init_codecs(_init(b"mp4a", b"esds", bytes(30))) is None
    assert codecs.init_codecs(b"\x00\x00\x00\x10moov") is None  # truncated: no crash
    assert codecs.init_codecs(b"") is None


@pytest.mark.parametrize(("stream", "expected"), [
    (b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x28\xac", "avc1.640028"),
    (b"\x00\x00\x01\x67\x4d\x40\x1f\x00", "avc1.4d401f"),
    (b"\x00\x00\x01\x65\x88\x84\x00\x00", None),  # a slice, no SPS
    (b"", None),
])
def test_codecs_from_sps(stream: bytes, expected: str | None) -> None:
    assert codecs.annexb_codecs(stream) == expected


@pytest.mark.parametrize(("profile", "expected"), [("LC", "mp4a.40.2"), ("HE-AAC", "mp4a.40.5"),
                                                   ("Opus", None)])
def test_aac_codecs(profile: str, expected: str | None) -> None:
    assert codecs.aac_codecs(profile) == expected


# ---------------------------------------------------------------- I-frame ranges, bit rates

def test_keyframe_ranges_fmp4_end_at_the_keyframe_sample() -> None:
    packets = [Packet(1100, 500, True), Packet(1600, 90, False), Packet(2100, 400, True),
               Packet(2500, 50, False)]
    assert keyframe_ranges(packets, [(1000, 1000), (2000, 600)], fmp4=True) == [600, 500]


def test_keyframe_ranges_ts_end_where_the_next_video_pes_starts() -> None:
    packets = [Packet(376, 9000, True), Packet(9776, 900, False), Packet(20304, 9000, True)]
    assert keyframe_ranges(packets, [(0, 20304), (20304, 15000)], fmp4=False) == [9776, 15000]


def test_keyframe_ranges_refuse_a_segment_without_one() -> None:
    with pytest.raises(UsageError, match="without a keyframe"):
        keyframe_ranges([Packet(10, 5, False)], [(0, 100)], fmp4=True)


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


# ---------------------------------------------------------------- progress

@pytest.mark.parametrize(("seconds", "text"), [
    (None, "--:--"), (float("nan"), "--:--"), (-1.0, "--:--"), (0.4, "0:00"), (65, "1:05"),
    (3723, "1:02:03"), (86399, "23:59:59"),
])
def test_clock_text(seconds: float | None, text: str) -> None:
    assert clock_text(seconds) == text


def test_progress_bar_on_a_pipe_prints_tenths_with_an_eta() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "package")
    for i in range(1001):
        bar(i / 1000, (1000 - i) * 0.5 if i else None)
    lines = out.getvalue().splitlines()
    assert lines[0] == "package   0%  ETA --:--"
    assert lines[5] == "package  50%  ETA 4:10"
    assert lines[-1] == "package 100%  done"
    assert len(lines) == 11
    bar.note("h264_720p peaks at 3.1 Mbit/s")
    assert out.getvalue().endswith("package: h264_720p peaks at 3.1 Mbit/s\n")


def test_tracker_eta_counts_only_this_runs_work(tmp_path: Path) -> None:
    folder = tmp_path
    (folder / "done.mp4").write_bytes(b"x")
    jobs = [Job("done", [], (folder / "done.mp4",), 1.0, 50.0),
            Job("a", [], (folder / "a.mp4",), 1.0, 25.0),
            Job("b", [], (folder / "a.mp4", folder / "b.mp4"), 1.0, 25.0)]
    clock = FakeClock(100.0)
    seen: list[tuple[float, float | None]] = []
    tracker = Tracker(jobs, lambda f, eta: seen.append((f, eta)), clock=clock)
    clock.now = 110.0
    tracker.update(jobs[1], 0.5)  # 12.5 of this run's weight in 10 s; 37.5 to go: 30 s
    assert seen[-1] == (0.625, 30.0)
    clock.now = 120.0
    tracker.finish(jobs[1])
    tracker.finish(jobs[2])
    assert seen[-1] == (1.0, 0.0)


# ---------------------------------------------------------------- the work folder

def test_work_folder_resumes_only_the_same_run(tmp_path: Path) -> None:
    out = tmp_path / "title"
    with Workdir(out).open({"input": "a"}) as work:
        assert not work.resumed
        (work.folder("h264_720p") / "c3000k-00000.mp4").write_bytes(b"done")
        (work.folder("h264_720p") / ".tmp-1-c3000k-00001.mp4").write_bytes(b"half")
        work.remember([ladder.Target("h264", ladder.Rung("720p", 720, 3000, 128), 1280, 720,
                                     cap_kbps=2000)])
    with Workdir(out).open({"input": "a"}) as work:
        assert work.resumed
        kept = sorted(p.name for p in (work.work / "h264_720p").iterdir())
        assert kept == ["c3000k-00000.mp4"]  # the half-written file is gone
        target = ladder.Target("h264", ladder.Rung("720p", 720, 3000, 128), 1280, 720)
        assert work.rate_of(target).cap_kbps == 2000
    with Workdir(out).open({"input": "b"}) as work:  # another run: start afresh
        assert not work.resumed and list(work.work.iterdir()) == []


@pytest.mark.parametrize("state", ["{not json", '{"fingerprint": 1}',
                                   '{"fingerprint": {"layout": 1, "input": "a"}, '
                                   '"rates": {"x": "bad", "y": [1, -2], "z": [3, 0]}}'])
def test_a_damaged_state_file_is_no_crash(tmp_path: Path, state: str) -> None:
    out = tmp_path / "title"
    with Workdir(out).open({"input": "a"}):
        pass
    (tmp_path / ".title.partial" / "state.json").write_text(state)
    with Workdir(out).open({"input": "a"}) as work:
        assert work.rates in ({}, {"z": (3, 0)})


def test_work_folder_is_locked_and_publishes_by_rename(tmp_path: Path) -> None:
    out = tmp_path / "title"
    out.mkdir()
    (out / "master.m3u8").write_text("old")
    with Workdir(out).open({"input": "a"}) as work:
        with pytest.raises(UsageError, match="another package run is writing"), \
                Workdir(out).open({"input": "a"}):
            pass
        title = work.fresh_title()
        (title / "master.m3u8").write_text("new")
        inode = title.stat().st_ino
        work.publish()
    assert (out / "master.m3u8").read_text() == "new" and out.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["title"]
