"""edge.viewerplaylist.ViewerBlocks: a viewer playlist's header block, encoded once per shared
block and variant with the ETag appended, says exactly what encoding the viewer's fields whole
says (differential, over any sequence of viewers, variants and blocks sharing one memo)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge360.edge.viewerplaylist import ViewerBlocks
from edge360.hls.personalize import personalize
from edge360.http.masters import cmsd
from edge360.http.represent import Prepared

BASES = [
    {"Content-Type": "application/vnd.apple.mpegurl", "Cache-Control": "public, max-age=14400",
     "ETag": '"v1"', "Access-Control-Expose-Headers": "ETag, Age", "X-Cache": "HIT",
     "Age": "3"},
    {"Content-Type": "application/vnd.apple.mpegurl", "Cache-Control": "max-age=2, "
     "stale-while-revalidate=4", "X-Cache": "STALE", "Age": "1", "Server": "nginx"},
]
BODY = b"#EXTM3U\n" + b"#EXTINF:4,\nseg.ts\n" * 200


def fields_of(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("latin-1").split("\r\n")[:-1]:
        name, value = line.split(": ", 1)
        assert name not in out  # every field once
        out[name] = value
    return out


viewer = st.tuples(st.sampled_from([0, 1]), st.sampled_from(["", "sid=a", "sid=b&token=t"]),
                   st.booleans(), st.sampled_from([None, 1_000_000, 2_500_000]))


@given(st.lists(viewer, min_size=1, max_size=30))
def test_a_block_says_what_the_viewers_fields_say(answers: list[tuple[int, str, bool,
                                                                      int | None]]) -> None:
    blocks = ViewerBlocks(limit=3)  # small: the memo is emptied along the way
    bases = [Prepared(dict(h)) for h in BASES]
    for which, params, gzip_ok, cap in answers:
        base = bases[which]
        headers = dict(base.headers)
        if cap is not None:
            headers["CMSD-Dynamic"] = cmsd(cap)
        _, etag = personalize(BODY, params, headers, headers.get("ETag"), gzip_ok)
        if etag:
            headers["ETag"] = etag
        made = Prepared(headers, block=blocks.block(base, bool(params), headers))
        assert fields_of(made.block) == fields_of(Prepared(headers).block)
        assert made.etag == headers.get("ETag") and made.carries == Prepared(headers).carries


def test_a_new_shared_block_is_never_answered_with_an_old_ones_fields() -> None:
    blocks = ViewerBlocks()
    old = Prepared({"Age": "1", "ETag": '"x"'})
    assert fields_of(blocks.block(old, False, dict(old.headers)))["Age"] == "1"
    new = Prepared({"Age": "2", "ETag": '"x"'})
    assert fields_of(blocks.block(new, False, dict(new.headers)))["Age"] == "2"
