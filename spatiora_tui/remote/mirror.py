"""A window's view of the queue the user's engine keeps (remote/hosted.py).

SessionMirror answers what the TUI asks of its queue (jobs/view.py's Queue: the jobs, what
runs, what waits, positions and ETAs) from what the engine tells its watchers, and sends what
the user does to it (submit, cancel, move, retry, pause, resume, a task switch) as `session.*`
requests. Nothing runs here: every window of the user's shows the same queue, with the same
running job and its previews, and a window that closes (or loses its SSH link) leaves the queue
running. The session's events come to `watch`'s listener as they come to a local runner's, on
the link's reader thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spatiora_tui.config import Settings
from spatiora_tui.engine.api import EngineError, GenerationRequest, GenerationResult
from spatiora_tui.jobs import events
from spatiora_tui.jobs.events import Emit, StepHook
from spatiora_tui.jobs.job import Job, JobKind, JobState
from spatiora_tui.jobs.session import eta_s, load_model, size_of, steps_of, switch_model
from spatiora_tui.jobs.store import Orphan
from spatiora_tui.jobs.sweep import Axis, SweepError
from spatiora_tui.jobs.view import Output
from spatiora_tui.remote.client import PREVIEW_FORMAT, PREVIEW_SIDE, RemoteEngine
from spatiora_tui.remote.hosted import JobShown, QueueShown, SessionNews, axes_wire
from spatiora_tui.remote.wire import encode


def _ignore(event: events.SessionEvent) -> None:
    return None


class SessionMirror:
    """The engine's queue as this window sees it (see the module docstring)."""

    def __init__(self, engine: RemoteEngine, settings: Settings, say: Callable[[str], object] | None = None) -> None:
        """`say`: where a request the engine could not take is told (a window's status line)."""
        self.engine = engine
        self.settings = settings
        self._say = say or (lambda _text: None)
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}  # in the order the engine lists them
        self._paused = False
        self._seq = 0
        self._unsaved: list[GenerationResult] = []
        self._listener: Emit = _ignore
        self._stops: list[Callable[[], None]] = []
        self._shown_running: int | None = None  # the running job the listener was told of
        self._sighted = False
        self._made: set[Path] = set()  # sheets and images saved again, as the engine told

    def watch(self, listener: Emit, preview_side: int = PREVIEW_SIDE) -> Callable[[], None]:
        """Follow the engine's queue: `listener` gets the session's events (QueueChanged for each
        new list); EngineError when the engine keeps no queue. Returns the call that stops it."""
        self._listener = listener
        self._stops = [
            self.engine.watch_link(self._link_changed),
            self.engine.watch_session(self._news, preview_side, PREVIEW_FORMAT, images=True),
        ]
        return self.close

    # -- reading -----------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def waiting(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.state.waiting]

    @property
    def running(self) -> Job | None:
        with self._lock:
            return next((job for job in self._jobs.values() if job.state is JobState.RUNNING), None)

    @property
    def busy(self) -> bool:
        return self.running is not None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def unsaved(self) -> list[GenerationResult]:
        with self._lock:
            return list(self._unsaved)

    @property
    def store_error(self) -> str | None:
        return None  # the engine's queue file: its log says when it cannot be written

    def position(self, job_id: int) -> int:
        ids = [job.id for job in self.waiting()]
        return ids.index(job_id) + 1 if job_id in ids else 0

    def eta_s(self, job_id: int) -> float | None:
        with self._lock:
            jobs = list(self._jobs.values())
        rates = [job.seconds_per_step for job in jobs if job.seconds_per_step is not None]
        running = next((job for job in jobs if job.state is JobState.RUNNING), None)
        waiting = [job for job in jobs if job.state.waiting]
        return eta_s(self.settings, running, waiting, job_id, rates[-1] if rates else None)

    def steps_of(self, job: Job) -> int:
        return steps_of(self.settings, job)

    def made(self) -> set[Path]:
        """As Session.made: the files the engine's queue made (as far as this window was told)."""
        with self._lock:
            return self._made | {job.path for job in self._jobs.values() if job.path is not None}

    def first_sight(self) -> bool:
        """True once: the first time it is asked after the engine's first list came."""
        with self._lock:
            if self._seq == 0 or self._sighted:
                return False
            self._sighted = True
            return True

    # -- the base model (the engine's: every window shares it) -------------------------------------

    def load_model(self, emit: Emit = _ignore) -> bool:
        """As Session.load_model: the engine has the model (or loads it); this window is told."""
        return load_model(self.engine, self.settings, emit)

    def switch_model(self, source: str, task: str | None, emit: Emit = _ignore) -> bool:
        """As Session.switch_model; the engine tells the other windows who switched it."""
        return switch_model(self.engine, source, task, emit)

    # -- changing the queue (requests to the engine) -------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        kind: JobKind = JobKind.IMAGE,
        group: str = "",
        label: str = "",
        output: Output = None,
    ) -> Job:
        return self._submit(request, 1, output)[0]

    def submit_batch(self, request: GenerationRequest, count: int, output: Output = None) -> list[Job]:
        return self._submit(request, count, output)

    def submit_sweep(self, base: GenerationRequest, axes: list[Axis], output: Output = None) -> list[Job]:
        try:
            return self._submit(base, 1, output, sweep=axes_wire(axes))
        except EngineError as exc:
            raise SweepError(str(exc)) from None

    def _submit(self, request: GenerationRequest, count: int, output: Output, **extra: Any) -> list[Job]:
        """EngineError (the engine's words) when it refuses them."""
        # Saved where this window's settings say (the engine may have been started with others).
        folder, name = output if output is not None else (self.settings.output_dir, None)
        where: dict[str, Any] = {"output_dir": str(folder.expanduser().resolve()), "output_name": name}
        reply = self.engine.session("submit", request=encode(request), count=count, **where, **extra)
        jobs = [Job.from_view(view) for view in reply["views"]]
        with self._lock:
            for job in jobs:
                self._jobs.setdefault(job.id, job)
        return jobs

    def _ask(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """A request to the engine's queue, its reply; None when the engine cannot take it (its
        link is down), and `say` is told why: a key never takes the window down."""
        try:
            return self.engine.session(kind, **fields)
        except EngineError as exc:
            self._say(f"your engine did not take that ({exc})")
            return None

    def cancel(self, job_id: int) -> bool:
        return bool((self._ask("cancel", job=job_id) or {}).get("done"))

    def cancel_all(self) -> int:
        return int((self._ask("cancel_all") or {}).get("count", 0))

    def move(self, job_id: int, delta: int) -> bool:
        return bool((self._ask("move", job=job_id, delta=delta) or {}).get("done"))

    def retry(self, job_id: int) -> Job | None:
        view = (self._ask("retry", job=job_id) or {}).get("view")
        if not isinstance(view, dict):
            return None
        job = Job.from_view(view)  # the engine's new job, as it queued it
        with self._lock:
            return self._jobs.setdefault(job.id, job)

    def pause(self) -> None:
        if self._ask("pause") is not None:
            self._paused = True  # (the next list says so too)

    def resume(self) -> None:
        self._ask("resume")

    def request_switch(self, task: str) -> None:
        self._ask("switch", task=task)

    # -- what a local queue does that this one leaves to the engine ------------------------------------

    def orphans(self) -> list[Orphan]:
        return []  # the engine takes up its own queue when it starts

    def adopt(
        self, orphans: Iterable[Orphan], interrupted: str | None = None, keep_ids: bool = False
    ) -> tuple[int, list[str]]:
        return 0, []

    def wants_runner(self) -> bool:
        return False  # the engine runs the jobs

    def run_next(self, emit: Emit = _ignore, on_step: StepHook | None = None) -> bool:
        return False

    def release_runner(self) -> None:
        return None

    def save_again(self, emit: Emit = _ignore) -> int:
        """The engine saves the images it could not save again; as Session.save_again."""
        reply = self._ask("save_again") or {}
        for said in reply.get("saved") or ():
            with self._lock:
                result = self._unsaved[0] if self._unsaved else None
                if result is not None and said.get("path"):
                    self._unsaved.pop(0)
            if result is not None:
                path = Path(said["path"]) if said.get("path") else None
                with self._lock:
                    self._made |= {path} if path is not None else set()
                emit(events.ImageSaved(result, path, said.get("error")))
        return int(reply.get("left", 0))

    def close(self) -> None:
        """Stop following (the queue goes on in the engine)."""
        for stop in self._stops:
            stop()
        self._stops = []

    # -- what the engine tells ---------------------------------------------------------------------

    def _link_changed(self, why: str | None) -> None:
        if why is not None:
            self._seq = 0  # the engine after a reconnect (maybe a new one) counts its lists afresh

    def _news(self, news: SessionNews) -> None:
        if isinstance(news, QueueShown):
            with self._lock:
                if news.seq < self._seq:
                    return
                self._seq = news.seq
                self._jobs = {job.id: job for job in news.jobs}
                self._paused = news.paused
                running = next((job for job in news.jobs if job.state is JobState.RUNNING), None)
                shown = self._jobs.get(self._shown_running) if self._shown_running is not None else None
                lost = shown is not None and shown.state is JobState.FAILED and shown.started is None
                if lost:
                    self._shown_running = None
                unseen = running is not None and running.id != self._shown_running
                if unseen and running is not None:
                    self._shown_running = running.id
            if lost and shown is not None:
                # It was running when its engine died: the engine that took up the queue marked
                # it failed (no event says so: the engine that ran it is gone).
                self._listener(events.JobFailed(shown.id, shown.task, shown.error or "failed", False))
            if unseen and running is not None:
                # A job that started before this window watched (it came back to its engine):
                # shown as running, its next steps as they come.
                total = running.steps_total or self.steps_of(running)
                self._listener(events.JobStarted(running.id, running.task, total, *size_of(self.settings, running)))
            self._listener(events.QueueChanged())
            return
        if isinstance(news, JobShown):
            with self._lock:
                self._jobs[news.job.id] = news.job
            return
        if isinstance(news, events.JobStarted):
            self._shown_running = news.job_id
        elif isinstance(news, (events.JobFinished, events.JobFailed)) and news.job_id == self._shown_running:
            self._shown_running = None
        if isinstance(news, events.JobStepped):
            with self._lock:
                job = self._jobs.get(news.job_id)
                if job is not None:
                    job.steps_done, job.steps_total = news.preview.step, news.preview.total
        elif isinstance(news, events.JobFinished) and news.save_error is not None:
            with self._lock:
                self._unsaved.append(news.result)
        elif isinstance(news, events.GroupFinished) and news.path is not None:
            with self._lock:
                self._made.add(news.path)
        self._listener(news)
