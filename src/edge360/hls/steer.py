"""Content steering in a master playlist (HLS 2nd edition, draft-pantos-hls-rfc8216bis §4.4.6.6,
EXT-X-CONTENT-STEERING): every variant once per pathway, each copy naming its pathway and
pointing at that pathway's base URL (docs/OVERLOAD.md, "Steering").

The tag goes after the playlist's header, naming the steering server and the pathway the player
starts on. Each pathway then gets its own copy of the EXT-X-MEDIA renditions (the first keeps
their GROUP-IDs, the others get "<id>@<pathway>" so no group is shared across pathways, as
players require), of the EXT-X-STREAM-INF variants and of the EXT-X-I-FRAME-STREAM-INF ones,
each with PATHWAY-ID. A relative URI becomes the pathway's base URL followed by the URI resolved
against the master, its query (the viewer's sid and ticket) kept; an absolute URI is left as it
is. Every other line stays once. Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edge360.hls.playlist import attributes, is_absolute, resolve

#: tags that are copied once per pathway
_PER_PATHWAY = ("#EXT-X-MEDIA:", "#EXT-X-STREAM-INF:", "#EXT-X-I-FRAME-STREAM-INF:")
#: header tags the steering tag goes after (RFC 8216 §4.3.1)
_HEADER = ("#EXTM3U", "#EXT-X-VERSION", "#EXT-X-INDEPENDENT-SEGMENTS")
#: attributes that name a rendition group (RFC 8216 §4.3.4.1, §4.3.4.2)
_GROUP_REFS = frozenset({"GROUP-ID", "AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"})
_QUOTED = re.compile(r'"[^"\r\n]*"')


def _absolute(uri: str, base: str, master_path: str) -> str:
    """A relative `uri` of the master at `master_path` as an absolute URL on `base`."""
    if is_absolute(uri):
        return uri
    path = resolve(master_path, uri) or master_path
    rest = uri[len(uri.split("?", 1)[0].split("#", 1)[0]):]  # query and fragment, as written
    return base + path + rest


def _tag_for(line: str, pathway: str, base: str, master_path: str, first: bool) -> str:
    """A per-pathway tag line: group names renamed (not for the first pathway), URI made
    absolute on the pathway's base, PATHWAY-ID added to the variants."""
    out: list[str] = []
    pos = 0
    for name, value, start, end in attributes(line):
        if name in _GROUP_REFS and not first and _QUOTED.fullmatch(value) \
                and not (name == "CLOSED-CAPTIONS" and value == "NONE"):
            out.append(line[pos:start] + f'"{value[1:-1]}@{pathway}"')
            pos = end
        elif name == "URI" and _QUOTED.fullmatch(value):
            out.append(line[pos:start] + f'"{_absolute(value[1:-1], base, master_path)}"')
            pos = end
        elif name == "PATHWAY-ID":
            # the master named a pathway already: ours replace it (only the attribute's value)
            out.append(line[pos:start] + f'"{pathway}"')
            pos = end
    text = "".join(out) + line[pos:]
    if not line.startswith("#EXT-X-MEDIA:") and "PATHWAY-ID=" not in line:
        text += f',PATHWAY-ID="{pathway}"'
    return text


def with_pathways(text: str, master_path: str, pathways: Sequence[tuple[str, str]],
                  start: str, server_uri: str) -> str:
    """The master with EXT-X-CONTENT-STEERING (SERVER-URI `server_uri`, PATHWAY-ID `start`) and
    its variants and renditions once per pathway (`pathways`: (ID, base URL) in order)."""
    lines = text.split("\n")
    header: list[str] = []
    body: list[str] = []
    items: list[tuple[str, str | None]] = []  # (tag line, its URI line for a STREAM-INF)
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        if line.startswith("#EXT-X-CONTENT-STEERING"):
            i += 1  # the upstream's own steering is replaced by ours
            continue
        if line.startswith(_PER_PATHWAY):
            uri = None
            if line.startswith("#EXT-X-STREAM-INF:"):
                j = i + 1
                while j < len(lines) and (not lines[j].strip() or lines[j].startswith("#")):
                    j += 1
                if j < len(lines):
                    uri = lines[j].rstrip("\r").strip()
                i = j
            items.append((line, uri))
        elif not body and not items and (line.startswith(_HEADER) or not line):
            header.append(line)
        else:
            body.append(line)
        i += 1
    while header and not header[-1]:
        header.pop()
    steering = f'#EXT-X-CONTENT-STEERING:SERVER-URI="{server_uri}",PATHWAY-ID="{start}"'
    out = [*header, steering, *[b for b in body if b]]
    for n, (pathway, base) in enumerate(pathways):
        for tag, uri in items:
            out.append(_tag_for(tag, pathway, base, master_path, n == 0))
            if uri is not None:
                out.append(_absolute(uri, base, master_path))
    return "\n".join(out) + "\n"
