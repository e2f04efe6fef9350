"""The packager on real encodes of tiny inputs, checked with ffprobe and ffmpeg, and the bundled
demo title. Inputs are seconds of low resolution with 1 s segments and 2 s chunks, so every
rendition is joined from several separately encoded chunks."""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge360.core.errors import UsageError
from edge360.hls.package import add_arguments, package, run
from edge360.hls.playlist import Variant, parse_master, parse_media
from edge360.hls.titles import check_title
from edge360.hls.workdir import Workdir
from tests.fixtures.titles import source_film
from tests.fixtures.tools import require_tool

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "media" / "demo"
SECONDS, FPS = 4, 25
LADDER = "240p:300k:64k,144p:150k:64k"
#: ffprobe's H.264 profile names -> profile_idc (ITU-T H.264 Annex A)
H264_PROFILES = {"High": 0x64, "Main": 0x4D, "Baseline": 0x42, "Constrained Baseline": 0x42}


def ffprobe(*args: str) -> str:
    return subprocess.run([require_tool("ffprobe"), "-v", "error", *args], capture_output=True,
                          check=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seconds of 426x240 test pattern at 25 fps with a tone."""
    return source_film(tmp_path_factory.mktemp("src") / "source.mp4", SECONDS, fps=FPS)


class Made:
    def __init__(self, out: Path, fractions: list[float], notes: list[str]) -> None:
        self.out, self.fractions, self.notes = out, fractions, notes


def _package(source: Path, out: Path, **kwargs: object) -> Made:
    require_tool("ffprobe")
    fractions: list[float] = []
    notes: list[str] = []
    options: dict[str, object] = {"ladder_spec": LADDER, "segment_seconds": 1.0,
                                  "chunk_seconds": 2.0, "preset": "superfast", **kwargs}
    made = package(source, out, progress=lambda f, _eta: fractions.append(f),
                   note=notes.append, **options)  # type: ignore[arg-type]
    return Made(made, fractions, notes)


@pytest.fixture(scope="module")
def mixed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    """HEVC and H.264 in fMP4, one master."""
    return _package(source, tmp_path_factory.mktemp("mixed") / "title", codecs="h264,hevc")


@pytest.fixture(scope="module")
def ts(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    """H.264 alone in MPEG-TS."""
    return _package(source, tmp_path_factory.mktemp("ts") / "title", fmt="ts")


def variants(title: Path, name: str = "master.m3u8") -> list[Variant]:
    return [v for v in parse_master((title / name).read_text()).variants if v.role == "variant"]


def iframe_variants(title: Path, name: str = "master.m3u8") -> list[Variant]:
    return [v for v in parse_master((title / name).read_text()).variants if v.role == "iframe"]


def rungs(title: Path) -> list[Path]:
    return [title / v.uri.split("/")[0] for v in variants(title)]


def single(rung: Path) -> Path:
    return rung / ("single.mp4" if (rung / "init.mp4").exists() else "single.ts")


def decodable(rung: Path, name: str, byterange: tuple[int, int] | None = None) -> Path:
    """A file ffprobe can read for one segment (an fmp4 fragment needs its init section first)."""
    data = (rung / name).read_bytes()
    if byterange is not None:
        data = data[byterange[0]:byterange[0] + byterange[1]]
    init = rung / "init.mp4"
    joined = rung.parent.parent / f"probe-{rung.name}-{name}-{byterange}.bin"
    joined.write_bytes((init.read_bytes() if init.exists() else b"") + data)
    return joined


def stream(path: Path, selector: str = "v:0") -> dict[str, str]:
    """ffprobe's fields of one stream, by name."""
    text = ffprobe("-select_streams", selector, "-show_entries", "stream", "-of", "default=nw=1",
                   str(path))
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def assert_codecs_match(video: str, fields: dict[str, str]) -> None:
    """A CODECS video value names the profile and level the stream has (RFC 6381)."""
    if fields["codec_name"] == "hevc":  # hvc1.<profile>.<compat>.L<level>[.<constraints>]
        assert fields["codec_tag_string"] == "hvc1"
        m = re.fullmatch(r"hvc1\.(\d+)\.([0-9A-F]+)\.[LH](\d+)(\.[0-9A-F]{2})*", video)
        assert m is not None, video
        assert {"Main": "1", "Main 10": "2"}[fields["profile"]] == m.group(1)
        assert int(m.group(3)) == int(fields["level"])
    else:  # avc1.PPCCLL
        assert fields["codec_name"] == "h264"
        m = re.fullmatch(r"avc1\.([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})", video)
        assert m is not None, video
        assert int(m.group(1), 16) == H264_PROFILES[fields["profile"]]
        assert int(m.group(3), 16) == int(fields["level"])


def key_times(path: Path) -> list[float]:
    """Times of the keyframes of a file's video, from its first frame."""
    lines = ffprobe("-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
                    "-of", "csv=p=0", str(path)).split()
    packets = [(float(t), f) for t, f, *_ in (ln.split(",") for ln in lines if "," in ln)]
    first = min(t for t, _ in packets)
    return sorted(round(t - first, 3) for t, f in packets if f.startswith("K"))


# ---------------------------------------------------------------- one master, two codecs

def test_layout_progress_and_no_work_left_behind(mixed: Made) -> None:
    out = mixed.out
    assert sorted(p.name for p in out.iterdir()) == [
        "h264_144p", "h264_240p", "hevc_144p", "hevc_240p", "master.m3u8", "master_br.m3u8"]
    assert sorted(p.name for p in (out / "hevc_240p").iterdir() if not p.name.startswith("seg_")) \
        == ["iframes.m3u8", "iframes_br.m3u8", "index.m3u8", "index_br.m3u8", "init.mp4",
            "single.mp4"]
    assert [p.name for p in out.parent.iterdir()] == ["title"]  # no .partial, no temporary file
    assert mixed.fractions and mixed.fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in mixed.fractions)


def test_each_rung_is_the_codec_and_size_its_master_says(mixed: Made) -> None:
    found = []
    for v in variants(mixed.out):
        rung = mixed.out / v.uri.split("/")[0]
        codec, _ = rung.name.split("_")
        fields = stream(single(rung))
        assert fields["codec_name"] == codec, fields
        assert (int(fields["width"]), int(fields["height"])) == v.resolution
        assert fields["pix_fmt"] == "yuv420p"
        assert v.codecs is not None
        video, audio = v.codecs.split(",")
        assert audio == "mp4a.40.2" and stream(single(rung), "a:0")["profile"] == "LC"
        assert_codecs_match(video, fields)
        if codec == "h264":
            assert fields["codec_tag_string"] == "avc1"
        found.append((codec, v.resolution))
    # HEVC first (a player that decodes it starts there), tallest first within each codec
    assert found == [("hevc", (426, 240)), ("hevc", (256, 144)), ("h264", (426, 240)),
                     ("h264", (256, 144))]


def test_bandwidths_are_measured_and_the_ladder_has_no_hole(mixed: Made) -> None:
    by_codec: dict[str, list[int]] = {}
    for v in variants(mixed.out):
        rung = mixed.out / v.uri.split("/")[0]
        media = parse_media((rung / "index.m3u8").read_text())
        seconds = sum(s.duration for s in media.segments)
        payload = sum((rung / s.path).stat().st_size for s in media.segments)
        assert v.average_bandwidth == math.ceil(payload * 8 / seconds)
        assert v.bandwidth is not None and v.bandwidth >= v.average_bandwidth
        assert v.frame_rate == 25.0
        by_codec.setdefault(rung.name.split("_")[0], []).append(v.bandwidth)
    for codec, peaks in by_codec.items():
        low, high = sorted(peaks)
        assert high <= 2 * low, (codec, peaks)
    br = variants(mixed.out, "master_br.m3u8")
    assert [(v.bandwidth, v.average_bandwidth, v.codecs, v.resolution) for v in br] == \
        [(v.bandwidth, v.average_bandwidth, v.codecs, v.resolution)
         for v in variants(mixed.out)]


@pytest.mark.parametrize("made", ["mixed", "ts"])
def test_keyframes_start_every_segment_in_every_rung(made: str,
                                                     request: pytest.FixtureRequest) -> None:
    title: Path = request.getfixturevalue(made).out
    boundaries = None
    for rung in rungs(title):
        media = parse_media((rung / "index.m3u8").read_text())
        assert [s.duration for s in media.segments] == [1.0] * SECONDS
        for seg in media.segments:
            first = ffprobe("-select_streams", "v:0", "-read_intervals", "%+#1",
                            "-show_entries", "frame=key_frame,pict_type", "-of", "csv=p=0",
                            str(decodable(rung, seg.path)))
            assert first.split()[0].split(",")[:2] == ["1", "I"], (rung.name, seg.path, first)
        # exactly one keyframe per segment, at the same instants in every rendition
        starts = [float(i) for i in range(SECONDS)]
        assert key_times(single(rung)) == starts, rung.name
        boundaries = boundaries or starts
        assert starts == boundaries


def test_no_frame_lost_or_doubled_where_chunks_join(mixed: Made) -> None:
    for rung in rungs(mixed.out):
        frames = ffprobe("-count_frames", "-select_streams", "v:0", "-show_entries",
                         "stream=nb_read_frames", "-of", "csv=p=0", str(single(rung)))
        assert int(frames.split()[0]) == SECONDS * FPS, rung.name
        audio = [line.split(",") for line in ffprobe(
            "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time",
            "-of", "csv=p=0", str(single(rung))).split()]
        heard = float(audio[-1][0]) + float(audio[-1][1]) - float(audio[0][0])
        assert abs(heard - SECONDS) < 0.1, heard  # the whole tone, once


@pytest.mark.parametrize("made", ["mixed", "ts"])
def test_byte_range_variant_carries_the_same_bits(made: str,
                                                  request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(made).out
    for rung in rungs(out):
        seg = parse_media((rung / "index.m3u8").read_text())
        br = parse_media((rung / "index_br.m3u8").read_text())
        whole = single(rung).read_bytes()
        assert [s.duration for s in seg.segments] == [s.duration for s in br.segments]
        expected_offset = 0
        if (rung / "init.mp4").exists():
            init = (rung / "init.mp4").read_bytes()
            assert br.segments[0].init_range == (0, len(init)) and whole[:len(init)] == init
            expected_offset = len(init)
        for s, b in zip(seg.segments, br.segments, strict=True):
            assert b.byterange is not None and b.byterange[0] == expected_offset
            offset, length = b.byterange
            assert whole[offset:offset + length] == (rung / s.path).read_bytes()
            expected_offset += length
        assert expected_offset == len(whole)
    for name in ("master.m3u8", "master_br.m3u8"):
        proc = subprocess.run([require_tool("ffmpeg"), "-nostdin", "-v", "error", "-i",
                               str(out / name), "-map", "0", "-c", "copy", "-f", "null", "-"],
                              capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("made", ["mixed", "ts"])
def test_iframe_playlists_address_each_segments_keyframe(made: str,
                                                         request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(made).out
    streams = {v.uri: v for v in variants(out)}
    frames = iframe_variants(out)
    assert len(frames) == len(streams)
    for v in frames:
        rung = out / v.uri.split("/")[0]
        stream = streams[f"{rung.name}/index.m3u8"]
        assert v.uri == f"{rung.name}/iframes.m3u8"
        assert v.resolution == stream.resolution
        assert stream.codecs is not None and v.codecs == stream.codecs.split(",")[0]
        text = (rung / "iframes.m3u8").read_text()
        assert "#EXT-X-I-FRAMES-ONLY" in text
        segments = parse_media((rung / "index.m3u8").read_text()).segments
        iframes = parse_media(text).segments
        br = parse_media((rung / "iframes_br.m3u8").read_text()).segments
        offsets = [s.byterange for s in parse_media((rung / "index_br.m3u8").read_text()).segments]
        assert [s.path for s in iframes] == [s.path for s in segments]
        assert [s.duration for s in iframes] == [s.duration for s in segments]
        lengths = []
        for frame, seg, in_single, at in zip(iframes, segments, br, offsets, strict=True):
            assert frame.byterange is not None and frame.byterange[0] == 0
            length = frame.byterange[1]
            assert 0 < length < (rung / seg.path).stat().st_size
            assert at is not None and in_single.byterange == (at[0], length)
            probe = ffprobe("-select_streams", "v:0", "-read_intervals", "%+#1",
                            "-show_entries", "frame=key_frame,pict_type", "-of", "csv=p=0",
                            str(decodable(rung, seg.path, frame.byterange)))
            assert probe.split()[0].split(",")[:2] == ["1", "I"], (rung.name, seg.path)
            lengths.append(length)
        assert v.average_bandwidth == math.ceil(sum(lengths) * 8 / SECONDS)
        assert v.bandwidth == math.ceil(max(lengths) * 8)
    assert [v.uri.replace("iframes", "iframes_br") for v in frames] == \
        [v.uri for v in iframe_variants(out, "master_br.m3u8")]


def test_ts_codecs_come_from_the_sequence_parameter_set(ts: Made) -> None:
    for v in variants(ts.out):
        rung = ts.out / v.uri.split("/")[0]
        assert not (rung / "init.mp4").exists() and (rung / "single.ts").exists()
        assert v.codecs is not None and v.codecs.endswith(",mp4a.40.2")
        assert_codecs_match(v.codecs.split(",")[0], stream(rung / "single.ts"))
    assert check_title(ts.out).masters == ("master.m3u8", "master_br.m3u8")


def test_a_hole_in_the_ladder_is_closed_by_encoding_again(source: Path, tmp_path: Path) -> None:
    # a generous cap the CRF never reaches above a tight one: far more than twice apart
    made = _package(source, tmp_path / "t", ladder_spec="240p:3000k:64k,144p:40k:64k",
                    chunk_seconds=2.0)
    assert any(n.startswith("a step of more than twice in measured peak: encoding again")
               for n in made.notes), made.notes
    low, high = sorted(v.bandwidth or 0 for v in variants(made.out))
    assert 0 < high <= 2 * low
    for rung in rungs(made.out):  # still whole: every frame, keyframes on the boundaries
        assert key_times(single(rung)) == [float(i) for i in range(SECONDS)]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_repackaging_replaces_an_earlier_title(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    _package(source, out, ladder_spec="144p:150k", chunk_seconds=4.0)
    _package(source, out, ladder_spec="180p:200k", chunk_seconds=4.0)
    assert sorted(p.name for p in out.iterdir()) == ["h264_180p", "master.m3u8",
                                                     "master_br.m3u8"]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


# ---------------------------------------------------------------- refusals

def test_text_input_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    require_tool("ffprobe")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a film\n" * 50)
    out = tmp_path / "title"
    with pytest.raises(UsageError, match=r"notes\.txt: not a video file"):
        package(text, out, ladder_spec=LADDER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    out.mkdir()
    with pytest.raises(UsageError):
        package(text, out, ladder_spec=LADDER)
    assert list(out.iterdir()) == []


def test_missing_input_and_occupied_destination(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    with pytest.raises(UsageError, match="no such file"):
        package(tmp_path / "absent.mp4", tmp_path / "t", ladder_spec=LADDER)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        package(source, busy, ladder_spec=LADDER)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_a_second_run_on_the_same_title_is_refused(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    out = tmp_path / "t"
    with Workdir(out).open({"held": "by this test"}), \
            pytest.raises(UsageError, match="another package run is writing"):
        package(source, out, ladder_spec=LADDER)


@pytest.mark.parametrize(("args", "needle"), [
    (["--preset", "placebo"], "argument --preset: invalid choice: 'placebo'"),
    (["--codecs", "av1"], "unknown codec 'av1'"),
    (["--ladder", "hevc/720p"], "names a codec that is not in --codecs"),
    (["--segment", "0.1"], "--segment must be between"),
    (["--format", "ts", "--jobs", "0"], "--jobs must be between 1 and 256"),
])
def test_bad_flags_are_one_line_and_exit_2(source: Path, tmp_path: Path, args: list[str],
                                           needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge360", "package", str(source), "--out",
                           str(tmp_path / "t"), *args], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


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


def test_ffmpeg_and_ffprobe_run_only_from_the_ffmpeg_module() -> None:
    hls = REPO / "src" / "edge360" / "hls"
    for path in hls.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if path.name != "ffmpeg.py":
            assert "subprocess" not in imported, path.name


# ---------------------------------------------------------------- the bundled demo title

def _demo_variants(name: str) -> list[Variant]:
    assert (DEMO / name).is_file(), "run scripts/make_demo.sh"
    return variants(DEMO, name)


def test_demo_is_hevc_and_h264_cmaf_under_30_mb() -> None:
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 30_000_000
    for name in ("master.m3u8", "master_br.m3u8"):
        found = _demo_variants(name)
        assert found[0].resolution == (3840, 2160)
        assert found[0].codecs is not None and found[0].codecs.startswith("hvc1.")
        families: dict[str, list[int]] = {}
        for v in found:
            assert v.codecs is not None and v.bandwidth is not None
            families.setdefault(v.codecs[:4], []).append(v.bandwidth)
            rung = DEMO / v.uri.split("/")[0]
            assert (rung / "init.mp4").is_file() and (rung / "single.mp4").is_file()
        assert set(families) == {"hvc1", "avc1"}
        assert any(h <= 360 for v in found if v.codecs and v.codecs.startswith("avc1")
                   for _w, h in [v.resolution or (0, 0)])
        for peaks in families.values():
            ordered = sorted(peaks)
            assert all(b <= 2 * a for a, b in itertools.pairwise(ordered)), peaks
        assert len(iframe_variants(DEMO, name)) == len(found)
    check_title(DEMO)


def test_demo_codecs_match_the_streams() -> None:
    for v in _demo_variants("master.m3u8"):
        assert v.codecs is not None
        rung = DEMO / v.uri.split("/")[0]
        assert_codecs_match(v.codecs.split(",")[0], stream(rung / "single.mp4"))


def test_timing_script_reports_time_per_hour_of_content(tmp_path: Path) -> None:
    require_tool("ffprobe")
    report = tmp_path / "timing.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "package_timing.py"), "--seconds", "1",
         "--size", "320x180", "--codecs", "h264", "--presets", "ultrafast", "--json",
         str(report)], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| preset | time per hour of content | renditions |" in proc.stdout
    data = json.loads(report.read_text())
    (row,) = data["presets"]
    assert row["preset"] == "ultrafast" and row["renditions"] == 1
    assert row["hours_per_hour_of_content"] > 0 and data["cores"] >= 1
