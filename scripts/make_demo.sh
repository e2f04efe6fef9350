#!/usr/bin/env bash
# Regenerate media/demo/, the bundled demo title, from a generated 4K test pattern with a tone.
#
# The title is shipped the way a 4K release is (docs/PACKAGING.md): HEVC in fMP4/CMAF (hvc1) at
# 3840x2160, 1920x1080, 1280x720 and 640x360, and H.264 in fMP4 at 1920x1080, 1280x720 and
# 640x360, all in one master.m3u8 so each player keeps what it can decode; an I-frame playlist per
# rendition for trick play; 6 s segments; both delivery variants, master.m3u8 (segment files) and
# master_br.m3u8 (one file per rendition addressed with EXT-X-BYTERANGE). The caps are far below a
# film's (a test pattern compresses well, and the folder is committed: it must stay under 30 MB);
# `edge360 package` measures the ladder and re-encodes any rung more than twice the one below.
#
# Usage: scripts/make_demo.sh [OUT_DIR]   (default: media/demo)
#        PYTHON=/path/to/python scripts/make_demo.sh   (default: .venv/bin/python)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/media/demo}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
for tool in ffmpeg ffprobe; do
    command -v "$tool" >/dev/null \
        || { echo "make_demo: $tool not found (install the ffmpeg package)" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

seconds=30
echo "make_demo: generating a ${seconds} s 3840x2160 test pattern" >&2
# High quality intermediate (crf 16) so the ladder is encoded from near-source pictures; a 1 kHz
# beep every second makes audio/video sync audible.
ffmpeg -nostdin -v error -y \
    -f lavfi -i "testsrc2=size=3840x2160:rate=30:duration=$seconds" \
    -f lavfi -i "sine=frequency=1000:beep_factor=4:sample_rate=48000:duration=$seconds" \
    -c:v libx264 -preset veryfast -crf 16 -pix_fmt yuv420p -c:a aac -b:a 128k -shortest \
    "$work/source.mp4"

# CODEC/NAME:VIDEO:AUDIO caps (kbit/s): HEVC carries each size with fewer bits than H.264, and
# each rung is about twice the one below it, as on a real ladder.
ladder="hevc/2160p:800k:64k,hevc/1080p:420k:64k,hevc/720p:240k:64k,hevc/360p:130k:64k"
ladder="$ladder,h264/1080p:480k:64k,h264/720p:280k:64k,h264/360p:150k:64k"
"$python" -m edge360 package "$work/source.mp4" --out "$out" --codecs h264,hevc \
    --ladder "$ladder" --segment 6 --preset veryfast

for master in master.m3u8 master_br.m3u8; do
    ffmpeg -nostdin -v error -i "$out/$master" -map 0 -c copy -f null - \
        || { echo "make_demo: $master does not read back cleanly" >&2; exit 1; }
done
bytes="$(du -sb "$out" | cut -f1)"
[ "$bytes" -lt 30000000 ] || { echo "make_demo: $bytes bytes: over 30 MB" >&2; exit 1; }
echo "make_demo: $bytes bytes in $out" >&2
