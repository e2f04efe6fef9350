"""One muxed rendition made ready to serve: its playlists, its single file, and what the master
playlist says about it, measured from its real segments.

From the segments ffmpeg wrote, each rendition folder gets:
- `index.m3u8`: the segments; `index_br.m3u8`: the same bits as one file, `single.ts` or
  `single.mp4` (the segments concatenated after the init section), addressed with EXT-X-BYTERANGE;
- `iframes.m3u8` and `iframes_br.m3u8`: trick play (RFC 8216 §4.3.3.6, EXT-X-I-FRAMES-ONLY), the
  byte range of the keyframe that starts each segment, in the segment files and in the single file.
  For fMP4 that range is the fragment's moof and mdat header up to the end of the keyframe's
  sample; for MPEG-TS it runs from the segment's PAT/PMT to the transport packet where the next
  video PES packet starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge360.core.errors import UsageError
from edge360.hls import codecs, ffmpeg
from edge360.hls.ladder import Target
from edge360.hls.playlist import parse_media


@dataclass(frozen=True, slots=True)
class RenditionResult:
    """What the master playlist says about one rendition, measured from its real segments."""

    target: Target
    width: int
    height: int
    video_codecs: str
    codecs: str  # video and audio
    bandwidth: int
    average_bandwidth: int
    iframe_bandwidth: int
    iframe_average_bandwidth: int
    fmp4: bool


def peak_bitrate(durations: Sequence[float], sizes: Sequence[int], target: float) -> int:
    """Peak segment bit rate (RFC 8216 §4.3.4.2 BANDWIDTH): the largest bit rate of any contiguous
    set of segments whose total duration is between 0.5 and 1.5 times the target duration. A title
    too short for any such set falls back to the largest single-segment rate."""
    best = 0.0
    for i in range(len(durations)):
        total_d, total_b = 0.0, 0
        for j in range(i, len(durations)):
            total_d += durations[j]
            total_b += sizes[j]
            if total_d > 1.5 * target:
                break
            if total_d >= 0.5 * target:
                best = max(best, total_b * 8 / total_d)
    if best == 0.0:
        best = max((b * 8 / d for b, d in zip(sizes, durations, strict=True) if d > 0), default=0)
    return math.ceil(best)


def _playlist(version: int, target: int, body: list[str], head: list[str]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", *head]
    return "\n".join([*lines, *body, "#EXT-X-ENDLIST", ""])


def keyframe_ranges(packets: Sequence[ffmpeg.Packet], segments: Sequence[tuple[int, int]],
                    fmp4: bool) -> list[int]:
    """The length, from each segment's first byte, of the range holding its keyframe; `segments`
    are (offset, size) in the single file whose video packets are `packets` (in file order)."""
    lengths = []
    index = 0
    for offset, size in segments:
        end = offset + size
        while index < len(packets) and packets[index].pos < offset:
            index += 1
        key = next((i for i in range(index, len(packets))
                    if packets[i].pos >= end or packets[i].key), None)
        if key is None or packets[key].pos >= end:
            raise UsageError(f"a segment at byte {offset} starts without a keyframe")
        if fmp4:
            stop = packets[key].pos + packets[key].size
        else:  # MPEG-TS: the keyframe's PES packet ends where the next video one begins
            stop = packets[key + 1].pos if key + 1 < len(packets) else end
        lengths.append(min(stop, end) - offset)
    return lengths


def _codecs(tools: ffmpeg.Tools, folder: Path, single: Path, init: str | None) -> str:
    if init is not None:
        found = codecs.init_codecs((folder / init).read_bytes())
    else:
        found = codecs.annexb_codecs(ffmpeg.first_annexb_frame(tools, single))
    if found is None:
        raise UsageError(f"cannot read the codec configuration of {folder.name}")
    return found


def finish(tools: ffmpeg.Tools, folder: Path, target: Target, has_audio: bool) -> RenditionResult:
    """Write the playlists and the single file of the rendition ffmpeg muxed into `folder`."""
    made = folder / "ffmpeg.m3u8"
    media = parse_media(made.read_text())
    made.unlink()
    names = [s.path for s in media.segments]
    durations = [s.duration for s in media.segments]
    sizes = [(folder / n).stat().st_size for n in names]
    if not names or any(d <= 0 for d in durations):
        raise UsageError(f"ffmpeg wrote no usable segments for {target.folder}")
    # RFC 8216 §4.3.3.1: every EXTINF rounded to the nearest integer is <= TARGETDURATION; the
    # ceiling satisfies that and the stricter reading (duration itself <= target).
    target_duration = math.ceil(max(durations) - 1e-6)
    init = media.segments[0].init_path
    fmp4 = init is not None
    init_size = (folder / init).stat().st_size if init else 0
    single = folder / ("single.mp4" if fmp4 else "single.ts")
    offsets = []
    offset = init_size
    with open(single, "wb") as out:
        if init:
            out.write((folder / init).read_bytes())
        for name, size in zip(names, sizes, strict=True):
            out.write((folder / name).read_bytes())
            offsets.append(offset)
            offset += size
    keys = keyframe_ranges(ffmpeg.video_packets(tools, single),
                           list(zip(offsets, sizes, strict=True)), fmp4)
    seg_lines, br_lines, if_lines, ifbr_lines = [], [], [], []
    for name, d, size, at, key in zip(names, durations, sizes, offsets, keys, strict=True):
        extinf = f"#EXTINF:{d:.6f},"
        seg_lines += [extinf, name]
        # RFC 8216 §4.3.2.2: EXT-X-BYTERANGE:<length>@<offset>
        br_lines += [extinf, f"#EXT-X-BYTERANGE:{size}@{at}", single.name]
        # an I-frame's EXTINF is the time to the next I-frame: here, its segment's duration
        if_lines += [extinf, f"#EXT-X-BYTERANGE:{key}@0", name]
        ifbr_lines += [extinf, f"#EXT-X-BYTERANGE:{key}@{at}", single.name]
    independent = ["#EXT-X-INDEPENDENT-SEGMENTS"]
    seg_map = [f'#EXT-X-MAP:URI="{init}"'] if init else []
    br_map = [f'#EXT-X-MAP:URI="{single.name}",BYTERANGE="{init_size}@0"'] if init else []
    # Versions per RFC 8216 §7: byte ranges and I-frames-only need 4, EXT-X-MAP needs 6 (5 in an
    # I-frames-only playlist).
    version = 6 if fmp4 else 3
    range_version = 6 if fmp4 else 4
    files = {"index.m3u8": (version, seg_lines, independent + seg_map),
             "index_br.m3u8": (range_version, br_lines, independent + br_map),
             "iframes.m3u8": (range_version, if_lines, ["#EXT-X-I-FRAMES-ONLY", *seg_map]),
             "iframes_br.m3u8": (range_version, ifbr_lines, ["#EXT-X-I-FRAMES-ONLY", *br_map])}
    for file_name, (v, body, head) in files.items():
        (folder / file_name).write_text(_playlist(v, target_duration, body, head))
    video = _codecs(tools, folder, single, init)
    fields = ffmpeg.stream_fields(tools, single, "v:0", "width", "height")
    audio = ""
    if has_audio:
        profile = ffmpeg.stream_fields(tools, single, "a:0", "profile").get("profile", "")
        audio_codecs = codecs.aac_codecs(profile)
        if audio_codecs is None:
            raise UsageError(f"{target.folder}: unexpected audio profile {profile!r}")
        audio = "," + audio_codecs
    try:
        width, height = int(fields["width"]), int(fields["height"])
    except (KeyError, ValueError):
        raise UsageError(f"cannot read the encoded video of {target.folder}") from None
    seconds = sum(durations)
    return RenditionResult(
        target, width, height, video, video + audio,
        peak_bitrate(durations, sizes, target_duration), math.ceil(sum(sizes) * 8 / seconds),
        peak_bitrate(durations, keys, target_duration), math.ceil(sum(keys) * 8 / seconds), fmp4)


def master(results: Sequence[RenditionResult], fps: float, byteranges: bool) -> str:
    """The master playlist (RFC 8216 §4.3.4.2 EXT-X-STREAM-INF, §4.3.4.3
    EXT-X-I-FRAME-STREAM-INF), renditions in the order given."""
    suffix = "_br" if byteranges else ""
    version = 6 if any(r.fmp4 for r in results) else (4 if byteranges else 3)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in results:
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={r.bandwidth},"
                     f"AVERAGE-BANDWIDTH={r.average_bandwidth},CODECS=\"{r.codecs}\","
                     f"RESOLUTION={r.width}x{r.height},FRAME-RATE={fps:.3f}")
        lines.append(f"{r.target.folder}/index{suffix}.m3u8")
    for r in results:
        lines.append(f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={r.iframe_bandwidth},"
                     f"AVERAGE-BANDWIDTH={r.iframe_average_bandwidth},"
                     f"CODECS=\"{r.video_codecs}\",RESOLUTION={r.width}x{r.height},"
                     f"URI=\"{r.target.folder}/iframes{suffix}.m3u8\"")
    return "\n".join([*lines, ""])
