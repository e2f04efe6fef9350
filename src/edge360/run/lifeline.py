"""A worker dies with its supervisor: no worker of `--workers N` is ever left serving on its own.

A worker without its supervisor would go on answering on the node's port with nobody counting its
viewers, restarting its siblings or owning the port, so the next node on that address would share
it with an orphan. Linux's PR_SET_PDEATHSIG (prctl(2)) has the kernel send the worker SIGKILL when
its parent goes, whatever way the parent goes (SIGKILL included). The signal is tied to the parent
*thread* that created the child, so the supervisor starts workers from its main thread only (its
event loop runs there). A parent that died before the worker armed the signal is caught by
comparing getppid() with the supervisor's pid afterwards.

Where prctl is not available (not Linux), a thread watches for the parent's pid to change instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

#: <linux/prctl.h>
PR_SET_PDEATHSIG = 1
#: how often the fallback thread looks at the parent, seconds
POLL_SECONDS = 0.5


def _prctl_pdeathsig(sig: int) -> bool:
    """Arm PR_SET_PDEATHSIG; False where the platform has no prctl."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return False
    return bool(libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) == 0)


def _orphaned() -> None:
    # no drain: without its supervisor this process is no longer part of a node, and the port
    # must be free for the next one
    os._exit(1)


def _watch_parent(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        if os.getppid() != parent:
            _orphaned()


def die_with_parent(parent: int) -> None:
    """Make this process end when `parent` (its supervisor) ends; end now if it already has."""
    if not _prctl_pdeathsig(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent,), name="edge360-lifeline",
                         daemon=True).start()
    if os.getppid() != parent:  # the supervisor died before the signal was armed
        _orphaned()
