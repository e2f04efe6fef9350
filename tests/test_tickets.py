"""Admission tickets (security.tickets): signed, bound, rotated like the token keys, refused
when forged, foreign or stale; the admission keys come from the environment or a file, and the
ticket cookie never goes to a parent (core.storedfields)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.config.schema import load
from edge360.core.errors import ConfigError
from edge360.core.storedfields import forwarded_request_fields, without_ticket_cookie
from edge360.security import tickets
from edge360.security.tokens import Key, parse_keys

KEYS = parse_keys("k1:secret-one,k0:secret-zero")
NOW = 1_800_000_000.0


def test_an_admitted_ticket_reads_back_until_it_expires() -> None:
    text = tickets.admitted(KEYS, "abcdefgh123", NOW, 60)
    assert text.startswith("t1.k1.a.abcdefgh123..0.")
    t = tickets.read(text, KEYS, NOW + 60)
    assert t == tickets.Ticket("a", "abcdefgh123", "", 0, int(NOW), int(NOW + 60))
    assert tickets.read(text, KEYS, NOW + 61) is None


def test_a_queue_ticket_keeps_its_number_epoch_and_first_refusal() -> None:
    text = tickets.queued(KEYS, "epoch1", 42, NOW - 30, NOW, 120)
    t = tickets.read(text, KEYS, NOW + 1)
    assert t is not None and (t.kind, t.epoch, t.number, t.since) == ("q", "epoch1", 42,
                                                                      int(NOW - 30))
    assert t.expires == int(NOW + 120)


def test_rotation_first_key_signs_every_key_verifies() -> None:
    old = tickets.admitted(parse_keys("k0:secret-zero"), "abcdefgh123", NOW, 60)
    assert tickets.read(old, KEYS, NOW) is not None  # still listed: still good
    assert tickets.read(old, parse_keys("k1:secret-one"), NOW) is None  # retired: refused
    assert tickets.admitted(KEYS, "abcdefgh123", NOW, 60).split(".")[1] == "k1"


@pytest.mark.parametrize("change", [
    lambda f: f.__setitem__(3, "otherotherx"),  # another sid
    lambda f: f.__setitem__(5, "1"),  # another place
    lambda f: f.__setitem__(7, str(int(f[7]) + 999)),  # a later expiry
    lambda f: f.__setitem__(2, "q"),  # another kind
    lambda f: f.__setitem__(8, f[8][:-2] + "AA"),  # a damaged MAC
    lambda f: f.__setitem__(1, "nokey"),  # an unknown key id
])
def test_any_changed_field_is_refused(change: object) -> None:
    fields = tickets.admitted(KEYS, "abcdefgh123", NOW, 60).split(".")
    assert callable(change)
    change(fields)
    assert tickets.read(".".join(fields), KEYS, NOW) is None


@given(st.text(max_size=300))
def test_any_text_is_a_ticket_or_none(text: str) -> None:
    assert tickets.read(text, KEYS, NOW) is None


def test_tickets_are_url_and_cookie_safe() -> None:
    text = tickets.queued(KEYS, "e" * 12, 10**9, NOW, NOW, 120)
    assert all(c.isalnum() or c in "._-" for c in text)
    assert len(text) <= tickets.MAX_TICKET


def test_cookie_is_found_and_stripped_before_going_upstream() -> None:
    header = f"a=1; {tickets.COOKIE}=t1.x; b=2"
    assert tickets.cookie_value(header) == "t1.x"
    assert without_ticket_cookie(header) == "a=1; b=2"
    assert forwarded_request_fields({"cookie": header})["cookie"] == "a=1; b=2"
    assert "cookie" not in forwarded_request_fields({"cookie": f"{tickets.COOKIE}=t1.x"})


def test_keys_from_environment_or_file_and_bad_ones_name_the_setting(tmp_path: Path) -> None:
    assert tickets.read_keys(load(None, {"EDGE360_ADMISSION_KEYS": "a:b,c:d"})) == (
        Key("a", b"b"), Key("c", b"d"))
    path = tmp_path / "keys"
    path.write_text("# rotated today\nnew:s1\nold:s0\n")
    keys = tickets.read_keys(load(None, {"EDGE360_ADMISSION_KEYS_FILE": str(path)}))
    assert [k.kid for k in keys] == ["new", "old"]
    with pytest.raises(ConfigError, match=r"admission\.keys"):
        tickets.read_keys(load(None, {"EDGE360_ADMISSION_KEYS": "nocolon"}))
    with pytest.raises(ConfigError, match=r"admission\.keys_file"):
        load(None, {"EDGE360_ADMISSION_KEYS_FILE": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="secrets come only from the environment"):
        toml = tmp_path / "c.toml"
        toml.write_text('[admission]\nkeys = "a:b"\n')
        load(toml, {})


def test_a_node_key_is_its_own() -> None:
    keys = tickets.node_key()
    assert tickets.is_node_key(keys) and not tickets.is_node_key(KEYS)
    assert tickets.read(tickets.admitted(keys, "abcdefgh123", NOW, 5), KEYS, NOW) is None
