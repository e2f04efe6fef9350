#!/usr/bin/env bash
# Regenerate media/demo/, the bundled demo title, from a generated 4K test pattern with a tone.
#
# The title is a four-rung ladder (3840x2160, 1920x1080, 1280x720 and a 640x360 rung of under
# 400 kbit/s, ~300 measured, that a weak mobile link holds), 6 s MPEG-TS segments, packaged by
# `edge360 package` in both delivery variants: master.m3u8 (segment files) and master_br.m3u8 (one
# file per rendition addressed with EXT-X-BYTERANGE). The bitrate caps keep the whole folder under
# 25 MB (both variants, about 23 MB) since it is committed to the repository; a test pattern
# compresses well, so these caps are far below what a film needs (the packager's default ladder is
# the one for real content).
#
# Usage: scripts/make_demo.sh [OUT_DIR]   (default: media/demo)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/media/demo}"
python="$root/.venv/bin/python"
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

# NAME:VIDEO:AUDIO caps (kbit/s). 2160p keeps about twice the bits of 1080p, as on a real ladder.
"$python" -m edge360 package "$work/source.mp4" --out "$out" \
    --ladder "2160p:1300k:64k,1080p:620k:64k,720p:380k:64k,360p:280k:64k" \
    --segment 6 --format ts --preset veryfast

for master in master.m3u8 master_br.m3u8; do
    ffmpeg -nostdin -v error -i "$out/$master" -map 0 -c copy -f null - \
        || { echo "make_demo: $master does not read back cleanly" >&2; exit 1; }
done
for rung in "$out"/*/; do
    # MPEG-TS lists the stream under its program too: every line printed must say High.
    profile="$(ffprobe -v error -select_streams v:0 -show_entries stream=profile -of csv=p=0 \
        "$rung/single.ts" | grep -v '^$' | sort -u)"
    [ "$profile" = "High" ] || { echo "make_demo: $rung is $profile, not High" >&2; exit 1; }
done
echo "make_demo: $(du -sb "$out" | cut -f1) bytes in $out" >&2
