"""RFC 6381 CODECS values read from encoded bytes: never written from what the encoder was asked.

A video rendition's CODECS names its profile, tier and level as the bitstream states them, so a
player that filters variants (hls.js asks `MediaSource.isTypeSupported`) decides on the truth:
- H.264 in fMP4: the avcC box of the initialization section (ISO/IEC 14496-15 §5.3.3.1);
- H.264 in MPEG-TS: the first sequence parameter set (ITU-T H.264 §7.3.2.1.1);
- HEVC in fMP4: the hvcC box (ISO/IEC 14496-15 §8.3.3.1), spelled as its Annex E says.
Pure functions over bytes; the ffmpeg module fetches the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

#: containers whose children are boxes (ISO/IEC 14496-12 §8), on the way to the sample entry
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
#: sample entry fields before its child boxes: the SampleEntry and VisualSampleEntry fields
_VISUAL_ENTRY_HEADER = 78
_VIDEO_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box between `start` and `end`; stops at the first
    malformed size instead of reading past it."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # a 64-bit largesize follows the type
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:  # the box runs to the end of its container
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def video_sample_entry(init: bytes) -> tuple[str, bytes] | None:
    """(sample entry type, its codec configuration box payload) of the first video track of an
    initialization section: ("hvc1", hvcC) or ("avc1", avcC); None when there is none."""
    def walk(start: int, end: int) -> tuple[str, bytes] | None:
        for kind, body, box_end in boxes(init, start, end):
            if kind in _CONTAINERS:
                found = walk(body, box_end)
                if found is not None:
                    return found
            elif kind == b"stsd":  # FullBox header (4) and entry_count (4), then the entries
                for entry, entry_body, entry_end in boxes(init, body + 8, box_end):
                    if entry not in _VIDEO_ENTRIES:
                        continue
                    for child, child_body, child_end in boxes(
                            init, entry_body + _VISUAL_ENTRY_HEADER, entry_end):
                        if child in (b"avcC", b"hvcC"):
                            return entry.decode("ascii"), init[child_body:child_end]
        return None
    return walk(0, len(init))


def avc_codecs(entry: str, profile: int, constraints: int, level: int) -> str:
    """`avc1.PPCCLL`: profile_idc, the constraint flags byte and level_idc in hex (RFC 6381
    §3.3)."""
    return f"{entry}.{profile:02x}{constraints:02x}{level:02x}"


def hevc_codecs(entry: str, hvcc: bytes) -> str | None:
    """`hvc1.<space><profile>.<compat>.<tier><level>[.<constraint bytes>]` from an hvcC payload
    (ISO/IEC 14496-15 Annex E.3): the profile space as "", A, B or C before the decimal
    general_profile_idc; the 32 compatibility flags bit-reversed in hex; L (Main tier) or H (High
    tier) before the decimal general_level_idc; then each of the six constraint-flag bytes in hex,
    trailing zero bytes left out."""
    if len(hvcc) < 13:
        return None
    first = hvcc[1]
    space, tier, profile = first >> 6, (first >> 5) & 1, first & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraint = list(hvcc[6:12])
    while constraint and constraint[-1] == 0:
        constraint.pop()
    parts = [entry, f"{'' if space == 0 else 'ABC'[space - 1]}{profile}", f"{reversed_compat:X}",
             f"{'H' if tier else 'L'}{hvcc[12]}", *(f"{b:02X}" for b in constraint)]
    return ".".join(parts)


def init_codecs(init: bytes) -> str | None:
    """The CODECS value of the video in an fMP4 initialization section, or None."""
    found = video_sample_entry(init)
    if found is None:
        return None
    entry, config = found
    if entry in ("avc1", "avc3"):
        if len(config) < 4:
            return None
        return avc_codecs(entry, config[1], config[2], config[3])
    return hevc_codecs(entry, config)


def annexb_codecs(annexb: bytes) -> str | None:
    """`avc1.PPCCLL` from the first sequence parameter set of an H.264 Annex B stream: the three
    bytes after the SPS NAL header are profile_idc, the constraint flags and level_idc."""
    start = 0
    for _ in range(len(annexb)):  # bounded: each pass moves past one start code
        i = annexb.find(b"\x00\x00\x01", start)
        if i < 0 or i + 6 >= len(annexb):
            return None
        if annexb[i + 3] & 0x1F == 7:
            return avc_codecs("avc1", annexb[i + 4], annexb[i + 5], annexb[i + 6])
        start = i + 3
    return None


#: ffprobe's AAC profile names -> MPEG-4 audio object type (ISO/IEC 14496-3 §1.5.1.1), the number
#: after `mp4a.40.` (RFC 6381 §3.3)
AAC_OBJECT_TYPES = {"LC": 2, "HE-AAC": 5, "HE-AACv2": 29, "Main": 1, "LTP": 4}


def aac_codecs(profile: str) -> str | None:
    """`mp4a.40.<object type>` for an AAC profile as ffprobe names it, or None."""
    object_type = AAC_OBJECT_TYPES.get(profile)
    return None if object_type is None else f"mp4a.40.{object_type}"
