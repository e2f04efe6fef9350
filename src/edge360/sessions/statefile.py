"""sessions.state_file: peak, views and open sessions kept across a graceful restart.

Written atomically (temporary file, fsync, rename) at shutdown, read at start; a missing file is a
fresh start, a damaged one is reported and ignored rather than crashing the node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import orjson

from edge360.config.schema import Config
from edge360.sessions.tracker import SessionTracker

log = logging.getLogger("edge360.state")


def new_tracker(config: Config) -> SessionTracker:
    s = config.sessions
    return SessionTracker(s.idle_timeout, s.peak_window, s.max_active, time_scale=s.time_scale)


def load_tracker(config: Config, clock: Callable[[], float]) -> SessionTracker:
    """The tracker restored from the state file, or a fresh one."""
    s = config.sessions
    if not s.state_file:
        return new_tracker(config)
    try:
        with open(s.state_file, "rb") as fh:
            data = orjson.loads(fh.read())
        tracker = SessionTracker.restore(data, clock(), idle_timeout=s.idle_timeout,
                                         peak_window=s.peak_window, max_active=s.max_active,
                                         time_scale=s.time_scale)
    except FileNotFoundError:
        return new_tracker(config)
    except (OSError, ValueError, TypeError) as e:
        log.error("ignoring unreadable session state %s: %s", s.state_file, e)
        return new_tracker(config)
    log.info("restored session state: %d active, peak %d, %d views", tracker.active,
             tracker.peak, tracker.views)
    return tracker


def save_tracker(config: Config, tracker: SessionTracker, now: float) -> None:
    path = config.sessions.state_file
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(tracker.snapshot(now)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        log.error("could not save session state to %s: %s", path, e)
