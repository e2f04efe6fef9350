"""Run a packaging run's encodes in parallel, up to the cores, with one progress figure and an ETA.

Each job is one ffmpeg run writing its files under temporary names, renamed into place when ffmpeg
succeeded, so a file under its final name is always complete and a later run skips it.
The first failure or an interruption stops every other ffmpeg of the run before the error goes on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from edge360.hls import ffmpeg
from edge360.hls.workdir import temporary_name

#: called with the fraction of the whole run done and the seconds it should still take (None
#: until there is a rate to go by)
RunProgress = Callable[[float, float | None], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One ffmpeg run writing `outputs`: its `args` name their temporary names
    (`workdir.temporary_name`), which become the outputs once ffmpeg succeeded."""

    label: str
    args: list[str]
    outputs: tuple[Path, ...]
    seconds: float  # media seconds it encodes (its progress is reported in those)
    weight: float  # its expected cost relative to the other jobs

    @property
    def done(self) -> bool:
        return all(out.is_file() for out in self.outputs)


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


class Tracker:
    """Overall progress of many jobs; the ETA divides what is left by the rate of this run's work
    (work finished before a resume does not count towards the rate)."""

    def __init__(self, jobs: Sequence[Job], report: RunProgress | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = sum(j.weight for j in jobs) or 1.0
        self.finished = sum(j.weight for j in jobs if j.done)
        self.at_start = self.finished
        self.partial: dict[str, float] = {}
        self.report, self.clock = report, clock
        self.started = clock()
        self.lock = threading.Lock()

    def update(self, job: Job, fraction: float) -> None:
        with self.lock:
            self.partial[job.label] = job.weight * fraction
            self._show()

    def finish(self, job: Job) -> None:
        with self.lock:
            self.partial.pop(job.label, None)
            self.finished += job.weight
            self._show()

    def _show(self) -> None:
        if self.report is None:
            return
        done = min(self.total, self.finished + sum(self.partial.values()))
        this_run = done - self.at_start
        elapsed = self.clock() - self.started
        eta = None
        if this_run > 0 and elapsed > 0:
            eta = (self.total - done) * elapsed / this_run
        self.report(done / self.total, eta)


def run_jobs(tools: ffmpeg.Tools, jobs: Sequence[Job], *, workers: int,
             progress: RunProgress | None = None) -> None:
    """Run every job whose output is missing, `workers` at a time, largest first."""
    tracker = Tracker(jobs, progress)
    pending = sorted((j for j in jobs if not j.done), key=lambda j: -j.weight)
    if not pending:
        if progress is not None:
            progress(1.0, 0.0)
        return
    processes = ffmpeg.Processes()

    def one(job: Job) -> None:
        try:
            ffmpeg.run_encode(tools, job.args, job.seconds, lambda f: tracker.update(job, f),
                              processes)
            for out in job.outputs:
                os.replace(temporary_name(out), out)
        finally:
            for out in job.outputs:
                temporary_name(out).unlink(missing_ok=True)
        tracker.finish(job)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="encode")
    futures: list[Future[None]] = []
    try:
        futures = [pool.submit(one, job) for job in pending]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
    except BaseException:
        processes.kill_all()  # then the other workers' ffmpeg runs end at once
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
