"""A node's processes as the kernel sees them (/proc): its workers, and whether a pid still runs."""

from __future__ import annotations

import time
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of `pid`, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may hold spaces: split after the last ')'
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (killed, not yet reaped)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def workers_of(supervisor: int) -> set[int]:
    """Pids of the worker processes `supervisor` runs (its spawned children, not helpers)."""
    found: set[int] = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None or st[1] != supervisor or st[0] in ("Z", "X"):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def wait_workers(supervisor: int, count: int, *, other_than: frozenset[int] = frozenset(),
                 limit: float = 30.0) -> set[int]:
    """The supervisor's workers once there are `count` of them, none in `other_than` (bounded)."""
    pids: set[int] = set()
    for _ in range(int(limit / 0.1)):
        pids = workers_of(supervisor)
        if len(pids) == count and not pids & other_than:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"supervisor {supervisor} has workers {pids}, wanted {count}")
