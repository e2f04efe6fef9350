"""Content steering, the pure parts: the pathway order (core.steering), the master with its
variants once per pathway (hls.steer), the node's reading of a pathway's /api/stats
(ops.steering.read_stats), and the virtual player's side (replay.steer)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge360.config.schema import Config
from edge360.core.steering import Pathway, assign, order, shares
from edge360.hls.steer import with_pathways
from edge360.ops.steering import draw, read_stats
from edge360.replay.steer import NO_PATHWAY, Steerer, parse_pathways, with_params

PATHS = (("a", "http://a.example"), ("b", "http://b.example:8081/cdn"))
MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en",URI="audio/en.m3u8?sid=s1"
#EXT-X-STREAM-INF:BANDWIDTH=2000000,AUDIO="aud",CODECS="avc1.64001f,mp4a.40.2"
hi/index.m3u8?sid=s1
#EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO="aud",CODECS="avc1.64001e,mp4a.40.2"
lo/index.m3u8?sid=s1
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="hi/iframes.m3u8?sid=s1"
"""


def test_master_lists_each_variant_once_per_pathway() -> None:
    text = with_pathways(MASTER, "/film/master.m3u8", PATHS, "b", "/steering?sid=s1")
    lines = text.splitlines()
    assert lines[:4] == ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS",
                         '#EXT-X-CONTENT-STEERING:SERVER-URI="/steering?sid=s1",PATHWAY-ID="b"']
    assert text.count("#EXT-X-STREAM-INF") == 4 and text.count("#EXT-X-MEDIA:") == 2
    assert "http://a.example/film/hi/index.m3u8?sid=s1" in lines
    assert "http://b.example:8081/cdn/film/lo/index.m3u8?sid=s1" in lines
    # the first pathway keeps its group names; the others get their own (no group is shared)
    assert 'GROUP-ID="aud",NAME="en",URI="http://a.example/film/audio/en.m3u8?sid=s1"' in text
    assert 'GROUP-ID="aud@b"' in text and 'AUDIO="aud@b"' in text
    assert text.count('PATHWAY-ID="a"') == 3 and text.count('PATHWAY-ID="b"') == 4
    assert 'URI="http://b.example:8081/cdn/film/hi/iframes.m3u8?sid=s1",PATHWAY-ID="b"' in text


def test_the_player_reads_the_pathways_back() -> None:
    text = with_pathways(MASTER, "/film/master.m3u8", PATHS, "b", "/steering?sid=s1")
    paths = parse_pathways(text, "http://a.example/film/master.m3u8")
    assert paths.steered and paths.start == "b"
    assert paths.server_uri == "http://a.example/steering?sid=s1"
    assert paths.variants["b"] == [(500000, "http://b.example:8081/cdn/film/lo/index.m3u8?sid=s1"),
                                   (2000000, "http://b.example:8081/cdn/film/hi/index.m3u8?sid=s1")]
    plain = parse_pathways(MASTER, "http://x/film/master.m3u8")
    assert not plain.steered and list(plain.variants) == [NO_PATHWAY]


def test_order_by_free_capacity_full_then_down_last() -> None:
    paths = [Pathway("a", active=90, capacity=100), Pathway("b", active=10, capacity=100),
             Pathway("c", active=100, capacity=100), Pathway("d", up=False),
             Pathway("e", active=None)]
    assert order(paths) == ["b", "a", "e", "c", "d"]
    # the pathway a viewer is on is full only when it holds more than its capacity
    both = [Pathway("b", active=100, capacity=100), Pathway("c", active=100, capacity=100)]
    assert order(both, current="c") == ["c", "b"]
    assert order([Pathway("b", active=99, capacity=100), Pathway("c", active=101, capacity=100)],
                 current="c")[0] == "b"


def test_only_the_excess_of_a_full_pathway_moves_and_only_to_room() -> None:
    # 120 viewers on a pathway of 100: 20 of them (by their stable draws) move, the rest stay
    over = [Pathway("a", active=120, capacity=100), Pathway("b", active=10, capacity=100)]
    moved = sum(order(over, current="a", draw=i / 120)[0] == "b" for i in range(120))
    assert moved == 20
    # no pathway has room: nobody moves from one full pathway to another
    jammed = [Pathway("a", active=120, capacity=100), Pathway("b", active=100, capacity=100)]
    assert all(order(jammed, current="a", draw=i / 120)[0] == "a" for i in range(120))
    # a player whose throughput the full pathway has no headroom for leaves it
    slow = [Pathway("a", active=120, capacity=100, headroom=1e6), Pathway("b", active=10,
                                                                          capacity=100)]
    assert order(slow, current="a", throughput=5e6, draw=0.99)[0] == "b"


def test_the_current_pathway_stays_unless_over_its_share() -> None:
    even = [Pathway("a", active=50, capacity=100), Pathway("b", active=48, capacity=100)]
    assert order(even, current="a", draw=0.0)[0] == "a"
    heavy = [Pathway("a", active=80, capacity=100), Pathway("b", active=20, capacity=100)]
    # a carries 30 over its half of 100, less a slack of 2 %: 28 of its 80 viewers move
    moved = sum(order(heavy, current="a", draw=i / 80)[0] == "b" for i in range(80))
    assert moved == 28


def test_a_slow_player_skips_a_pathway_without_egress_headroom() -> None:
    paths = [Pathway("a", active=1, capacity=100, headroom=1e6), Pathway("b", active=50,
                                                                         capacity=100)]
    assert order(paths, throughput=5e6)[0] == "b"
    assert order(paths, throughput=5e5)[0] == "a"


def test_new_viewers_go_where_the_shares_need_them() -> None:
    paths = [Pathway("a", active=0, capacity=30), Pathway("b", active=0, capacity=10)]
    assert shares(paths) == {"a": 0.75, "b": 0.25}
    placed: dict[str, int] = {"a": 0, "b": 0}
    for _ in range(40):
        placed[assign(paths, placed) or ""] += 1
    assert placed == {"a": 30, "b": 10}
    assert assign([Pathway("a", up=False)]) is None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 200)),
                min_size=1, max_size=5), st.floats(0, 0.999))
def test_order_names_every_pathway_once(spec: list[tuple[bool, int, int]], r: float) -> None:
    paths = [Pathway(f"p{i}", up=up, active=a, capacity=c) for i, (up, a, c) in enumerate(spec)]
    ranked = order(paths, current="p0", draw=r)
    assert sorted(ranked) == sorted(p.id for p in paths)
    downs = [p.id for p in paths if not p.up]
    assert ranked[len(ranked) - len(downs):] == downs


def test_read_stats_of_edge360_of_a_cdn_and_of_a_draining_node() -> None:
    s = read_stats("a", {"sessions_active": 5, "capacity": 10, "node_id": "n1",
                         "egress_limit": 100, "egress_projected": 40, "steering": {}})
    assert s.pathway == Pathway("a", True, 5, 10, 60.0) and s.node_id == "n1" and s.steering
    # a node's load is every seat it holds: active sessions and starting ones
    busy = read_stats("d", {"sessions_active": 5, "sessions_starting": 3, "capacity": 10})
    assert busy.pathway.active == 8
    assert read_stats("b", "not json").pathway == Pathway("b", True)
    assert not read_stats("c", {"draining": True, "sessions_active": 1}).pathway.up
    assert 0 <= draw("abcdefgh") < 1 and draw(None) == 0.5


def test_the_player_moves_by_priority_and_away_from_a_failure() -> None:
    text = with_pathways(MASTER, "/film/master.m3u8", PATHS, "a", "/steering")
    st_ = Steerer(parse_pathways(text, "http://a.example/film/master.m3u8"))
    assert st_.pathway == "a" and st_.due(0.0)
    st_.priority = ["b", "a"]
    assert st_._choose(0.0) == "b"
    st_.priority = ["a", "b"]
    assert st_._choose(0.0) is None
    assert st_.failed(1.0) == "b"  # a failed: penalized, b is next
    url = "http://a.example/film/hi/index.m3u8?sid=s1"
    assert st_.same_rung(url, "b") == "http://b.example:8081/cdn/film/hi/index.m3u8?sid=s1"
    assert with_params("http://x/s?sid=1&_HLS_pathway=a", _HLS_pathway="b") == \
        "http://x/s?sid=1&_HLS_pathway=b"


class Holder:
    """A node's config holder (node.overload.Configured), as NodeState is one."""

    def __init__(self, config: Config) -> None:
        self.config = config


def test_sends_stay_pending_until_a_poll_can_show_them() -> None:
    """A node's count of the viewers it sent each pathway (node.overload): sends to itself are
    in any poll begun after them; sends to another pathway only in one begun AWAY_TRANSIT_S
    after them (its player must get there first); with N workers each send stands for N."""
    from edge360.node.overload import AWAY_TRANSIT_S, OverloadState, PathwayState

    config = Config().replace("steering", pathways=(("a", "http://a"), ("b", "http://b")))
    config = config.replace("server", workers=2)
    ov = OverloadState.build(Holder(config), None)
    ov.polled({"a": PathwayState(Pathway("a", True, 10, 100), node_id=ov.own_id()),
               "b": PathwayState(Pathway("b", True, 3, 50))}, began=100.0)
    assert ov.own_pathway() == "a" and ov.pending() == {"a": 0, "b": 0}
    for at in (100.2, 100.4):
        ov.note_sent("a", at)
        ov.note_sent("b", at)
    assert ov.pending() == {"a": 4, "b": 4}                 # two sends each, two workers
    state = dict(ov.paths)
    ov.polled(state, began=100.5)                          # after both sends
    assert ov.pending() == {"a": 0, "b": 4}                # b's viewers may not be there yet
    ov.polled(state, began=100.3 + AWAY_TRANSIT_S)
    assert ov.pending() == {"a": 0, "b": 2}
    ov.polled(state, began=101.0 + AWAY_TRANSIT_S)
    assert ov.pending() == {"a": 0, "b": 0}
    # the new viewers then go where the shares need them, the pending ones counted
    assert assign(ov.pathways(), ov.pending()) == "b"
    ov.note_sent("b", 102.5)
    assert assign(ov.pathways(), ov.pending()) == "a"
