"""Admission by capacity, the pure rule (sessions.admission): the node admits up to its
capacity counting starting and active sessions, queues the rest with numbers it calls in order
as seats free up, holds a called seat for its viewer, and names a Retry-After from the churn,
clamped to 2-60 s."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge360.sessions.admission import MAX_RETRY, MIN_RETRY, Queue, Verdict, admit
from edge360.sessions.tracker import SessionTracker

IDLE, HOLD = 30.0, 120.0


def table() -> SessionTracker:
    return SessionTracker(IDLE, 15.0, 1000)


def ask(t: SessionTracker, q: Queue, now: float, key: str, *, explicit: bool = False,
        ticket: tuple[str, int] | None = None, capacity: int = 2, spare: bool = False
        ) -> Verdict:
    return admit(t, q, now, key=key, explicit=explicit, title="demo", capacity=capacity,
                 hold=HOLD, idle=IDLE, ticket=ticket, spare=spare)


def test_admits_up_to_capacity_counting_the_seat_at_once() -> None:
    t, q = table(), Queue("e")
    assert ask(t, q, 0.0, "a").admitted and ask(t, q, 0.0, "b").admitted
    assert t.starting == 2  # the seats are taken before either viewer plays
    third = ask(t, q, 0.0, "c")
    assert not third.admitted and third.fresh and third.number == 1 and third.position == 1
    assert q.waiting(0.0, HOLD) == 1


def test_an_existing_session_is_never_refused() -> None:
    t, q = table(), Queue("e")
    ask(t, q, 0.0, "a")
    ask(t, q, 0.0, "b")
    t.touch("a", 1.0, title="demo", rendition="hi", media=6.0)
    again = ask(t, q, 2.0, "a", explicit=True)
    assert again.admitted and again.known
    assert not ask(t, q, 2.0, "unknown-sid", explicit=True).admitted


def test_numbers_are_called_in_order_and_a_called_seat_is_held() -> None:
    t, q = table(), Queue("e")
    ask(t, q, 0.0, "a")
    ask(t, q, 0.0, "b")
    first, second = ask(t, q, 0.0, "c"), ask(t, q, 0.0, "d")
    assert (first.number, second.number) == (1, 2)
    # the two starting sessions end at 30 s: both numbers are called, their seats held
    newcomer = ask(t, q, 31.0, "e")
    assert not newcomer.admitted and newcomer.number == 3 and q.called == 2
    assert ask(t, q, 31.0, "d", ticket=("e", 2)).admitted  # number 2 comes back first
    assert ask(t, q, 31.5, "c", ticket=("e", 1)).admitted
    assert not ask(t, q, 31.5, "e", ticket=("e", 3)).admitted  # no seat left for 3


def test_a_later_number_waits_for_an_earlier_one() -> None:
    t, q = table(), Queue("e")
    ask(t, q, 0.0, "a", capacity=1)
    ask(t, q, 0.0, "b", capacity=1)  # number 1
    ask(t, q, 0.0, "c", capacity=1)  # number 2
    later = ask(t, q, 31.0, "c", ticket=("e", 2), capacity=1)
    assert not later.admitted and later.position == 1
    assert ask(t, q, 31.0, "b", ticket=("e", 1), capacity=1).admitted


def test_a_held_seat_lapses_and_a_ticket_of_another_queue_is_a_newcomer() -> None:
    t, q = table(), Queue("e")
    ask(t, q, 0.0, "a", capacity=1)
    ask(t, q, 0.0, "b", capacity=1)
    assert ask(t, q, 31.0, "x", capacity=1).number == 2  # number 1 is called and held
    # nobody claims it within the grace: the seat goes to the next number
    late = 31.0 + Queue.grace(HOLD) + 1
    assert ask(t, q, late, "x", ticket=("e", 2), capacity=1).admitted
    other = ask(t, q, late, "y", ticket=("other-run", 1), capacity=1)
    assert not other.admitted and other.fresh


def test_spare_means_no_number_when_another_node_has_room() -> None:
    t, q = table(), Queue("e")
    ask(t, q, 0.0, "a", capacity=1)
    refused = ask(t, q, 0.0, "b", capacity=1, spare=True)
    assert not refused.admitted and refused.number == 0 and q.issued == 0


def test_retry_after_follows_the_churn_clamped() -> None:
    q = Queue("e")
    # before any session ended: the idle timeout (nothing ends sooner), clamped
    assert q.retry_after(5, idle=1.0, hold=HOLD) == MIN_RETRY
    assert q.retry_after(5, idle=300.0, hold=HOLD) == MAX_RETRY
    for second in range(61):
        q.observe(float(second), second * 2)  # two sessions end a second
    assert q.churn() == 2.0
    assert q.retry_after(19, idle=IDLE, hold=HOLD) == 10
    assert q.retry_after(10_000, idle=IDLE, hold=HOLD) == MAX_RETRY
    assert q.retry_after(10_000, idle=IDLE, hold=10) == 5  # back before the ticket lapses


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=60),
       st.integers(1, 6))
def test_never_more_seats_than_capacity(steps: list[tuple[bool, int]], capacity: int) -> None:
    """Whatever arrives, starts playing or comes back with its number, the sessions the node
    admitted never exceed its capacity."""
    t, q = table(), Queue("e")
    now, numbers = 0.0, {}
    for n, (play, advance) in enumerate(steps):
        now += advance * 7.0
        key = f"viewer{n}"
        held = numbers.pop(min(numbers), None) if numbers and n % 2 else None
        if held is not None:
            key = held[0]
        v = ask(t, q, now, key, capacity=capacity,
                ticket=None if held is None else ("e", held[1]))
        if v.admitted and play:
            t.touch(key, now, title="demo", rendition="hi", media=6.0)
        elif not v.admitted and v.number:
            numbers[v.number] = (key, v.number)
        t.expire(now)
        assert t.active + t.starting <= capacity
