"""A command's images through the queue the user's engine keeps (remote/hosted.py).

`spatiora generate` on the user's engine submits its images there and follows them: the engine
makes them and saves them where the command was asked to, so a terminal that closes or an SSH
link that drops loses none of them (the next `spatiora queue` or `spatiora` shows them).
While the command runs it prints what it printed when it ran the images itself. When its link
drops it reattaches at once (starting the engine again if it died: that engine takes up the
queue, the image that was being made failed with how the engine ended) and goes on following.
ctrl+c cancels the command's images, within a step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spatiora_tui.cli.common import one_line
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.jobs import events
from spatiora_tui.jobs.job import Job, JobState
from spatiora_tui.jobs.sweep import Axis
from spatiora_tui.remote.hosted import QueueShown, axes_wire
from spatiora_tui.remote.wire import encode

#: Seconds a command waits, after its group's last image, for the engine to save the sheet.
SHEET_WAIT_S = 60.0
#: Reattaching after a dropped link: tries, and seconds between them.
REATTACH_TRIES = 3
REATTACH_PAUSE_S = 1.0


class LostEngine(Exception):
    """The link dropped and could not be made again; the message says why."""


class EngineBatch:
    """One command's images on the engine's queue: submit(), then follow() to their end."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        #: Where the jobs' events go (set once they are known: a report counts them).
        self.report: Callable[[Any], object] = lambda _event: None
        self._news: queue.Queue[Any] = queue.Queue()
        self.jobs: dict[int, Job | None] = {}  # ours, by id: the newest the engine said of each
        self._told: set[int] = set()  # jobs whose end was printed
        self._ends: dict[int, events.JobFinished | events.JobFailed] = {}  # as the events said
        self._seq = 0
        #: Seconds from a dropped link to following again (each reattach).
        self.reattached_s: list[float] = []

    def submit(
        self, request: GenerationRequest, count: int, folder: Path, name: str | None, axes: list[Axis] | None = None
    ) -> list[Job]:
        """Queue `count` images (seeds s, s+1, ...), or the cells of a sweep over `axes`, to be
        saved in `folder` (as `name`-N.png); the jobs as queued. EngineError when the engine
        refuses them. Watching starts first: nothing is missed."""
        self._stops = [
            self._engine.watch_session(self._news.put),
            self._engine.watch_link(lambda why: self._news.put(("link", why))),
        ]
        sweep = {"sweep": axes_wire(axes)} if axes else {}
        reply = self._engine.session(
            "submit", request=encode(request), count=count, output_dir=str(folder), output_name=name, **sweep
        )
        jobs = [Job.from_view(view) for view in reply["views"]]
        self.jobs = dict.fromkeys(job.id for job in jobs)
        return jobs

    def follow(self, cancel: threading.Event) -> None:
        """Print the jobs' events until all have ended (and their sheet is saved); `cancel` set:
        cancel them. LostEngine when the link cannot be made again."""
        cancelled, sheet_since = False, 0.0
        try:
            while True:
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    self._cancel()
                try:
                    item = self._news.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if self._take(item):
                    return
                if not self._all_ended():
                    continue
                if len(self.jobs) == 1 or not self._sheet_due():
                    return
                sheet_since = sheet_since or time.monotonic()  # it comes right after the last image
                if time.monotonic() - sheet_since > SHEET_WAIT_S:
                    return
        finally:
            for stop in self._stops:
                stop()

    def ours(self) -> list[Job | None]:
        """Our jobs as they ended (with their results, which only the events carry)."""
        return [
            _ended_as(job, self._ends[job_id]) if job is not None and job_id in self._ends else job
            for job_id, job in self.jobs.items()
        ]

    # -- what comes ------------------------------------------------------------------------------

    def _take(self, item: Any) -> bool:
        """Take one piece of news; True when the group's sheet was said (the end)."""
        if isinstance(item, tuple):
            if item[1] is not None:
                self._reattach(str(item[1]))
        elif isinstance(item, QueueShown):
            if item.seq >= self._seq:
                self._seq = item.seq
                for job in item.jobs:
                    if job.id in self.jobs:
                        self.jobs[job.id] = job
                        self._say_end(job)
        elif isinstance(item, events.GroupFinished):
            if any(job is not None and job.group == item.group for job in self.jobs.values()):
                self.report(item)
                return True
        elif item is not None and getattr(item, "job_id", None) in self.jobs:
            if isinstance(item, (events.JobFinished, events.JobFailed)):
                if item.job_id in self._told:
                    return False
                self._told.add(item.job_id)
                self._ends[item.job_id] = item
            self.report(item)
        return False

    def _say_end(self, job: Job) -> None:
        """A job the list shows ended that no event told of (it failed as the engine died,
        or was cancelled while it waited): say so once."""
        if job.id in self._told or not job.state.ended:
            return
        if job.state is JobState.CANCELLED and job.started is None:
            self._told.add(job.id)  # cancelled while it waited: said only when another client did
            if job.cancelled_by:
                print(f"  job {job.id}: cancelled by {job.cancelled_by} before it started", file=sys.stderr)
        elif job.state is JobState.FAILED and job.started is None:
            self._told.add(job.id)  # failed as the engine died: the engine taking up its queue says so
            self.report(events.JobFailed(job.id, job.task, job.error or "failed", job.out_of_memory))

    def _reattach(self, why: str) -> None:
        """The link dropped: make it again (the engine started again if it died) and go on."""
        began = time.monotonic()
        print(f"the link to your engine dropped ({one_line(why)}); reattaching…", file=sys.stderr)
        for attempt in range(REATTACH_TRIES):
            try:
                self._engine.restart()
                break
            except EngineError as exc:
                if attempt == REATTACH_TRIES - 1:
                    raise LostEngine(str(exc)) from None
                time.sleep(REATTACH_PAUSE_S)
        self._seq = 0  # a new engine counts its lists from 1
        self.reattached_s.append(time.monotonic() - began)
        print(f"reattached in {self.reattached_s[-1]:.1f} s", file=sys.stderr)

    def _cancel(self) -> None:
        for job_id in sorted(self.jobs, reverse=True):  # the waiting ones first, then the running one
            with contextlib.suppress(EngineError):
                self._engine.session("cancel", job=job_id)

    def _all_ended(self) -> bool:
        """Every job has ended and been told of (a list may show an end before its event)."""
        return all(job is not None and job.id in self._told for job in self.jobs.values())

    def _sheet_due(self) -> bool:
        """Whether the engine says something of the group's sheet: it does when the last of its
        jobs to end ran (not when the last ones were cancelled while they waited)."""
        ended: Iterable[Job] = (job for job in self.ours() if job is not None)
        last = max(ended, key=lambda job: job.ended or 0.0)
        return last.started is not None


def _ended_as(job: Job, event: events.JobFinished | events.JobFailed) -> Job:
    """The job as a finished or failed event leaves it (the next list says the same)."""
    now = time.time()
    started, ended = job.started or now, job.ended or now
    if isinstance(event, events.JobFailed):
        return dataclasses.replace(job, state=JobState.FAILED, error=event.error, started=started, ended=ended)
    result = event.result
    # The engine's list says how it ended; before it comes, the result does (a finished image
    # crosses only when it could not be saved, so its absence says nothing).
    state = job.state if job.state.ended else JobState.CANCELLED if result.cancelled else JobState.DONE
    return dataclasses.replace(
        job, state=state, path=event.path, error=event.save_error, result=result, started=started, ended=ended
    )
