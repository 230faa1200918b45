"""The headless session: a queue of jobs run one at a time on one engine.

Everything the app used to keep in its own fields (the running generation, a task switch waiting
for it, images whose save failed) lives here, with no UI toolkit: the TUI is a view of a Session,
`spatiora generate --count` and `spatiora queue run` drive one from the command line, and the
tests drive one with the fake engine.

Threads: any thread may submit, cancel, reorder, pause or resume (all under one lock). One
runner at a time calls `run_next` until it returns False; `wants_runner` hands out that role, so
a job submitted as the runner is about to stop is never stranded. What happens is reported as
events (frozen dataclasses carrying the job id) to the `emit` callback the runner passes.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from spatiora_tui.atomic import clean_stale_partials
from spatiora_tui.config import SEED_RANGE, ConfigError, Settings, random_seed
from spatiora_tui.engine.api import (
    Engine,
    EngineError,
    EngineOOM,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    StepPreview,
)
from spatiora_tui.engine.requests import check_request
from spatiora_tui.jobs.events import (
    Emit,
    GroupFinished,
    ImageSaved,
    JobFailed,
    JobFinished,
    JobStarted,
    JobStepped,
    ModelFailed,
    ModelLoading,
    ModelReady,
    QueueChanged,
    SessionEvent,
    StepHook,
    TaskSwitched,
    TaskSwitchFailed,
)
from spatiora_tui.jobs.job import Group, Job, JobKind, JobState
from spatiora_tui.jobs.sheets import SheetError, save_contact_sheet, save_sweep_grid
from spatiora_tui.jobs.store import Orphan, QueueFileError, QueueStore
from spatiora_tui.jobs.sweep import Axis, checked_cells
from spatiora_tui.jobs.view import Output
from spatiora_tui.outputs import OutputError, save_result

if TYPE_CHECKING:
    from spatiora_tui.hw.telemetry import HardwareFeed

#: Most images in one batch (a typo of 1000 should not queue an afternoon's work).
MAX_BATCH = 100


def _ignore(event: SessionEvent) -> None:
    return None


class Session:
    """Jobs, their queue, and one engine that runs them (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        store: QueueStore | None = None,
        telemetry: HardwareFeed | None = None,
        output_dir: Path | None = None,
        output_name: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.output_dir = output_dir or settings.output_dir
        self._output_name = output_name  # one file name (`generate --out x.png`); numbered in a batch
        self._telemetry = telemetry
        self._store = store
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._groups_made = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._waiting: list[int] = []  # queue order
        self._groups: dict[str, Group] = {}
        self._running: Job | None = None
        self._cancel = threading.Event()
        self._paused = False
        self._runner = False
        self._pending_switch: str | None = None
        self._closing = False
        self._cancel_asked: int | None = None  # the running job the user cancelled
        self._unsaved: list[GenerationResult] = []
        #: With a compiled UNet: the model, and the sizes it has drawn at since it was loaded.
        self._compiled: tuple[str, set[tuple[int, int]]] = ("", set())
        self._seconds_per_step: float | None = None
        self._writer = _QueueWriter(store) if store is not None else None
        #: Task switches the queue made between jobs (the figure docs/performance.md reports).
        self.switches_between_jobs = 0
        #: Told (under the session's lock: it must only take note) whenever the queue changes;
        #: the user's engine tells every window from it (remote/hosted.py).
        self.on_change: Callable[[], None] | None = None

    # -- reading ------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def jobs(self) -> list[Job]:
        """Every job of the session: ended ones (oldest first), the running one, then the
        waiting ones in queue order."""
        with self._lock:
            ended = sorted((j for j in self._jobs.values() if j.state.ended), key=lambda j: j.ended or 0.0)
            running = [self._running] if self._running is not None else []
            return ended + running + [self._jobs[i] for i in self._waiting]

    def waiting(self) -> list[Job]:
        with self._lock:
            return [self._jobs[i] for i in self._waiting]

    @property
    def running(self) -> Job | None:
        return self._running

    @property
    def busy(self) -> bool:
        """A job or a task switch is running."""
        return self._runner

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def unsaved(self) -> list[GenerationResult]:
        """Images whose save failed, oldest first, kept until a save_again succeeds."""
        with self._lock:
            return list(self._unsaved)

    def made(self) -> set[Path]:
        """The files this queue's jobs made: their images (saved, or saved again) and sheets."""
        with self._lock:
            sheets = {group.sheet for group in self._groups.values() if group.sheet is not None}
            return sheets | {job.path for job in self._jobs.values() if job.path is not None}  # saved again too

    def group(self, group_id: str) -> Group:
        with self._lock:
            return self._groups[group_id]

    def position(self, job_id: int) -> int:
        """1 for the next job to run, 2 after it, ...; 0 for a job that is not waiting."""
        with self._lock:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else 0

    def eta_s(self, job_id: int) -> float | None:
        """Seconds until `job_id` ends, from the steps ahead of it and the speed of the jobs run
        so far; None before any job has run (or for a job that is not waiting or running)."""
        with self._lock:
            waiting = [self._jobs[i] for i in self._waiting]
            return eta_s(self.settings, self._running, waiting, job_id, self._seconds_per_step)

    def steps_of(self, job: Job) -> int:
        """The steps `job` will run: its request's, else its task's (0 for a task that is gone)."""
        return steps_of(self.settings, job)

    # -- changing the queue -------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        kind: JobKind = JobKind.IMAGE,
        group: str = "",
        label: str = "",
        output: Output = None,
        by: str = "",
    ) -> Job:
        """Queue one job at the end (paused when the queue is). EngineError, before anything is
        queued, for a request no engine would run (engine/requests.py: every front end's check).
        `output`: (folder, file stem or None) to save it in, instead of the session's folder;
        `by`: who queued it, when another client of the user's engine did (Job.by)."""
        check_request(self.settings, request)
        with self._lock:
            job = self._add(request, kind=kind, group=group, label=label, output=output, by=by)
            self._changed()
            return job

    def submit_batch(self, request: GenerationRequest, count: int, output: Output = None, by: str = "") -> list[Job]:
        """Queue `count` jobs with seeds s, s+1, ... (s: the request's seed, else a random one);
        with more than one, they form a group whose contact sheet is saved once all have ended."""
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"batch count must be between 1 and {MAX_BATCH}, got {count}")
        check_request(self.settings, request)  # once: the members differ only in their seeds
        low, high = SEED_RANGE
        first = request.seed if request.seed is not None else random_seed()
        if count == 1:
            return [self.submit(dataclasses.replace(request, seed=first), output=output, by=by)]
        seeds = [low + (first - low + i) % (high - low + 1) for i in range(count)]  # wrapping at the top
        return self._add_group(
            JobKind.BATCH,
            [
                (dataclasses.replace(request, seed=seed), f"{i + 1}/{count} · seed {seed}", ())
                for i, seed in enumerate(seeds)
            ],
            output=output,
            by=by,
        )

    def submit_sweep(self, base: GenerationRequest, axes: list[Axis], output: Output = None, by: str = "") -> list[Job]:
        """Queue the cells of an X/Y/Z sweep (see jobs/sweep.py) as one group, whose labelled
        grid is saved once all have ended. Every cell is checked as the engine will check it
        before any is queued: SweepError names the first that cannot run."""
        if base.seed is None:  # one seed for every cell, unless seed is an axis
            base = dataclasses.replace(base, seed=random_seed())
        cells = checked_cells(self.settings, base, axes)
        titles = tuple((axis.title, tuple(axis.label(i) for i in range(len(axis.values)))) for axis in axes)
        members = [(cell.request, cell.label, cell.index) for cell in cells]
        return self._add_group(JobKind.SWEEP, members, titles, output, by)

    def _add_group(
        self,
        kind: JobKind,
        members: list[tuple[GenerationRequest, str, tuple[int, ...]]],
        axes: tuple[tuple[str, tuple[str, ...]], ...] = (),
        output: Output = None,
        by: str = "",
    ) -> list[Job]:
        """Queue a batch's or a sweep's jobs, (request, label, sweep cell) each, as one group."""
        with self._lock:
            name = f"{kind.value}-{next(self._groups_made)}"
            while name in self._groups:  # taken by a group adopted under its own name
                name = f"{kind.value}-{next(self._groups_made)}"
            group = Group(name, kind, [], axes)
            jobs = [
                self._add(request, kind=kind, group=group.id, label=label, cell=cell, axes=axes, output=output, by=by)
                for request, label, cell in members
            ]
            group.job_ids.extend(job.id for job in jobs)
            self._groups[group.id] = group
            self._changed()
            return jobs

    def _add(
        self,
        request: GenerationRequest,
        *,
        kind: JobKind = JobKind.IMAGE,
        group: str = "",
        label: str = "",
        cell: tuple[int, ...] = (),
        axes: tuple[tuple[str, tuple[str, ...]], ...] = (),
        output: Output = None,
        by: str = "",
    ) -> Job:
        """A new job with the next id, queued at the end."""
        job = Job(next(self._ids), request, kind=kind, group=group, label=label, cell=cell, axes=axes, by=by)
        if output is not None:
            job.output_dir, job.output_name = output
        return self._keep(job)

    def _keep(self, job: Job) -> Job:
        """Hold `job` (new, or adopted from a dead session); one that waits goes at the end,
        paused when the queue is."""
        if self._paused and job.state is JobState.QUEUED:
            job.state = JobState.PAUSED
        self._jobs[job.id] = job
        if job.state.waiting:
            self._waiting.append(job.id)
        return job

    def cancel(self, job_id: int, by: str = "") -> bool:
        """Cancel a waiting job, or stop the running one within one step; a failed job kept for
        a retry is let go. False when it has already ended. `by`: who asked, when another client
        of the user's engine did (Job.cancelled_by, when it is not the one who queued it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state is JobState.FAILED and job.retried_as is None and not job.dismissed:
                job.dismissed = True  # the user lets it go: the queue file no longer keeps it
                self._changed()
                return True
            if job is None or job.state.ended:
                return False
            job.cancelled_by = by if by != job.by else ""
            if job.state is JobState.RUNNING:
                self._cancel_asked = job.id  # by the user: it ends cancelled even if we close now
                self._cancel.set()
                self._changed()
                return True
            self._waiting.remove(job_id)
            self._end(job, JobState.CANCELLED)
            self._changed()
            return True

    def cancel_all(self) -> int:
        """Cancel every waiting job and the running one; returns how many."""
        with self._lock:
            ids = list(self._waiting) + ([self._running.id] if self._running is not None else [])
            for job_id in ids:
                self.cancel(job_id)
            return len(ids)

    def move(self, job_id: int, delta: int) -> bool:
        """Move a waiting job `delta` places (negative: sooner). False when it cannot move."""
        with self._lock:
            if job_id not in self._waiting:
                return False
            old = self._waiting.index(job_id)
            new = max(0, min(len(self._waiting) - 1, old + delta))
            if new == old:
                return False
            self._waiting.insert(new, self._waiting.pop(old))
            self._changed()
            return True

    def retry(self, job_id: int) -> Job | None:
        """Queue a failed or cancelled job again (as a new job, at the end); None otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in (JobState.FAILED, JobState.CANCELLED):
                return None
            output = (job.output_dir, job.output_name) if job.output_dir is not None else None
            again = self._add(
                job.request,
                kind=job.kind,
                group=job.group,
                label=job.label,
                cell=job.cell,
                axes=job.axes,
                output=output,
                by=job.by,
            )
            job.retried_as = again.id
            group = self._groups.get(job.group)
            if group is not None:
                group.job_ids[group.job_ids.index(job.id)] = again.id
            self._changed()
            return again

    def pause(self) -> None:
        """Start nothing new; the running job finishes."""
        with self._lock:
            self._paused = True
            for job_id in self._waiting:
                self._jobs[job_id].state = JobState.PAUSED
            self._changed()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            for job_id in self._waiting:
                self._jobs[job_id].state = JobState.QUEUED
            self._changed()

    def hold_while_down(
        self, watch_link: Callable[[Callable[[str | None], object]], Callable[[], None]]
    ) -> Callable[[], None]:
        """With the engine in another process: a dropped link pauses the queue, so that the jobs
        waiting do not each start an engine (or fail) in turn, and the link's return resumes it
        (a queue the user paused stays paused). `watch_link` is the engine's (RemoteEngine's);
        the call that stops it is returned."""
        held = threading.Event()

        def changed(why: str | None) -> None:  # on the link's thread, before a running job hears
            if why is not None and not self.paused:
                held.set()
                self.pause()
            elif why is None and held.is_set():
                held.clear()
                self.resume()

        return watch_link(changed)

    def request_switch(self, task: str) -> None:
        """Make `task` the active one: at once when nothing runs, else once the queue is empty
        (queued jobs switch as each one's task needs; its adapters are read into RAM now)."""
        with self._lock:
            self._pending_switch = task
            later = self._runner or bool(self._waiting)
        if later:
            self.engine.prefetch(task)

    def adopt(
        self, orphans: Iterable[Orphan], interrupted: str | None = None, keep_ids: bool = False
    ) -> tuple[int, list[str]]:
        """Queue the jobs that dead sessions left (see QueueStore), then remove their files once
        this session's own file holds them. Returns (jobs queued, problems). `interrupted`: why
        the sessions ended, when known (the job each was running then fails, saying so, rather
        than running again: it may be what ended them). `keep_ids`: a job keeps its number
        and a group its name where no job of this session has them (the user's engine taking up
        its own queue: the windows that follow them know them by these)."""
        count, problems = 0, []
        for orphan in orphans:
            problems += orphan.problems
            unread: list[dict[str, object]] = []
            with self._lock:
                renamed: dict[str, str] = {}
                for record in orphan.records:
                    try:
                        job = Job.from_record(record, self._adopted_id(record, keep_ids), interrupted)
                    except (KeyError, TypeError, ValueError) as exc:
                        problems.append(f"{orphan.path.name}: a job could not be read ({exc}); it is left there")
                        unread.append(record)
                        continue
                    if job.group:
                        fresh = keep_ids and job.group not in self._groups and job.group not in renamed.values()
                        name = job.group if fresh else f"{job.kind.value}-{next(self._groups_made)}"
                        job.group = renamed.setdefault(job.group, name)
                        group = self._groups.setdefault(job.group, Group(job.group, job.kind, [], job.axes))
                        group.job_ids.append(job.id)
                    self._keep(job)
                    count += job.state.waiting
                self._changed()
            if not self.flush() or orphan.problems:
                orphan.release()  # not safely elsewhere yet, or not read at all: left as it is
            elif unread:
                try:
                    orphan.keep_only(unread)
                except OSError:
                    orphan.release()
            else:
                orphan.remove()
        return count, problems

    def _adopted_id(self, record: dict[str, object], keep: bool) -> int:
        """A number for a job read back: its own where free (with `keep`), else the next one;
        the numbers given later start after it."""
        old = record.get("id")
        if keep and isinstance(old, int) and not isinstance(old, bool) and old > 0 and old not in self._jobs:
            self._ids = itertools.count(max(old + 1, next(self._ids)))
            return old
        return next(self._ids)

    def wants_runner(self) -> bool:
        """True (once) when there is work and no runner: the caller must then call run_next
        until it returns False."""
        with self._lock:
            if self._runner or not self._has_work():
                return False
            self._runner = True
            return True

    def release_runner(self) -> None:
        """The runner stopped on an error that escaped run_next: hand the role out again (the
        next wants_runner starts a new one) and end the job it left running."""
        with self._lock:
            self._runner = False
            job = self._running
            if job is not None:
                job.error = job.error or "the runner stopped unexpectedly"
                self._end(job, JobState.FAILED)
                self._changed()

    def orphans(self) -> list[Orphan]:
        """The queues that sessions which ended left in the state folder (see QueueStore)."""
        return self._store.orphans() if self._store is not None else []

    def _has_work(self) -> bool:
        if self._pending_switch is not None and self._pending_switch != self.engine.active_task:
            return True
        return not self._paused and any(self._jobs[i].state is JobState.QUEUED for i in self._waiting)

    # -- running --------------------------------------------------------------------------------

    def run_next(self, emit: Emit = _ignore, on_step: StepHook | None = None) -> bool:
        """Run the next job (or the task switch the user asked for, once no job waits); False
        when there is nothing to do, and the caller is no longer the runner."""
        with self._lock:
            job = None
            if not self._paused and self._waiting:
                job = self._jobs[self._waiting.pop(0)]
                job.state = JobState.RUNNING
                job.started = time.time()
                self._running = job
                self._cancel = threading.Event()
                self._changed()
            elif self._pending_switch is not None and self._pending_switch != self.engine.active_task:
                task, self._pending_switch = self._pending_switch, None
            else:
                self._pending_switch = None
                self._runner = False
                return False
        if job is None:
            self._switch(task, emit)
            return True
        emit(QueueChanged())
        try:
            self._run(job, emit, on_step)
        except Exception as exc:  # a defect: the job fails visibly, the queue goes on
            self._fail(job, f"{type(exc).__name__}: {exc}", False, emit)
        return True

    def _switch(self, task: str, emit: Emit, job_id: int = 0) -> bool:
        try:
            switch = self.engine.switch_task(task)
        except EngineError as exc:
            emit(TaskSwitchFailed(task, str(exc), job_id))
            return False
        emit(TaskSwitched(switch, job_id))
        return True

    def _run(self, job: Job, emit: Emit, on_step: StepHook | None) -> None:
        width, height = size_of(self.settings, job)
        model = self.engine.model
        compiles = model is not None and model.compiled != "" and (width, height) not in self._compiled_sizes(model)
        emit(JobStarted(job.id, job.task, self.steps_of(job), width, height, compiles))
        if self.engine.active_task != job.task:
            with self._lock:
                first = self.engine.active_task is None
            if not self._switch(job.task, emit, job.id):
                # Said by TaskSwitchFailed; the job fails with the same words.
                self._fail(job, f"could not switch to task {job.task}", False, emit)
                return
            self.switches_between_jobs += not first
        self._prefetch_after(job)

        def step(preview: StepPreview) -> None:
            job.steps_done, job.steps_total = preview.step, preview.total
            if on_step is not None:
                on_step(job, preview)
            emit(JobStepped(job.id, preview, preview.step / max(preview.elapsed_s, 1e-6)))

        try:
            result = self.engine.generate(job.request, on_step=step, cancel=self._cancel)
        except EngineError as exc:
            self._fail(job, str(exc), isinstance(exc, EngineOOM), emit)
            return
        path = error = None
        if result.image is not None and result.model.compiled:
            self._compiled_sizes(result.model).add((result.params.width, result.params.height))
        if result.image is not None and not result.cancelled:
            path, error = self._save(result, job)
        with self._lock:
            job.result = result if path is None else dataclasses.replace(result, image=None)
            job.path, job.error = path, error
            if result.steps_done and result.timings.image_ms:
                job.seconds_per_step = result.timings.image_ms / 1000 / result.steps_done
                self._seconds_per_step = job.seconds_per_step
            if error is not None:
                self._unsaved.append(result)
            if self._closing and result.cancelled and self._cancel_asked != job.id:
                return  # stopped by close(): the queue file keeps it as it was, to run again
            self._end(job, JobState.CANCELLED if result.cancelled or result.image is None else JobState.DONE)
            self._changed()
        emit(JobFinished(job.id, result, path, error, job.cancelled_by if result.cancelled else ""))
        emit(QueueChanged())
        self._finish_group(job, emit)

    def _compiled_sizes(self, model: ModelInfo) -> set[tuple[int, int]]:
        if self._compiled[0] != model.source:  # another model compiles afresh
            self._compiled = (model.source, set())
        return self._compiled[1]

    # -- the base model ---------------------------------------------------------------------------

    def load_model(self, emit: Emit = _ignore) -> bool:
        """Load the first task's model and make the task active; see load_model below."""
        return load_model(self.engine, self.settings, emit)

    def switch_model(self, source: str, task: str | None, emit: Emit = _ignore) -> bool:
        """Replace the base model; see switch_model below."""
        return switch_model(self.engine, source, task, emit)

    def _prefetch_after(self, job: Job) -> None:
        """Read the next waiting job's adapters into RAM while this one runs."""
        with self._lock:
            upcoming = next((self._jobs[i] for i in self._waiting), None)
        if upcoming is not None and upcoming.task != job.task:
            self.engine.prefetch(upcoming.task)

    def _fail(self, job: Job, error: str, out_of_memory: bool, emit: Emit) -> None:
        with self._lock:
            job.error, job.out_of_memory = error, out_of_memory
            self._end(job, JobState.FAILED)
            self._changed()
        emit(JobFailed(job.id, job.task, error, out_of_memory))
        emit(QueueChanged())
        self._finish_group(job, emit)

    def _end(self, job: Job, state: JobState) -> None:
        job.state = state
        job.ended = time.time()
        if self._running is job:
            self._running = None

    def _save(self, result: GenerationResult, job: Job | None = None) -> tuple[Path | None, str | None]:
        folder, name = self._output_of(job)
        if name is not None and job is not None and job.group:
            name = f"{name}-{self._groups[job.group].job_ids.index(job.id) + 1}"
        try:
            if self._telemetry is not None:
                with self._telemetry.stage("save"):
                    return save_result(result, folder, name), None
            return save_result(result, folder, name), None
        except OutputError as exc:
            return None, str(exc)

    def _output_of(self, job: Job | None) -> tuple[Path, str | None]:
        """(folder, file stem) a job's image is saved as: its submitter's, else the session's."""
        if job is not None and job.output_dir is not None:
            return job.output_dir, job.output_name
        return self.output_dir, self._output_name

    def _finish_group(self, job: Job, emit: Emit) -> None:
        with self._lock:
            group = self._groups.get(job.group)
            if group is None or group.sheet is not None:
                return
            members = [self._jobs[i] for i in group.job_ids if i in self._jobs]
            if any(not m.state.ended for m in members) or len(group.job_ids) != len(members):
                return
        done = [m for m in members if m.state is JobState.DONE]
        if len(done) < 2:
            emit(GroupFinished(group.id, None, "fewer than two images came out: no sheet"))
            return
        folder = self._output_of(members[0])[0]
        try:
            if group.kind is JobKind.SWEEP and group.axes:
                group.sheet = save_sweep_grid(members, folder, group)
            else:
                group.sheet = save_contact_sheet(done, folder, group)
        except SheetError as exc:
            emit(GroupFinished(group.id, None, str(exc)))
            return
        emit(GroupFinished(group.id, group.sheet))

    # -- saving again ---------------------------------------------------------------------------

    def save_again(self, emit: Emit = _ignore) -> int:
        """Save the images whose save failed (on the caller's thread); stops at the first failure,
        as the same cause would fail the rest. Returns how many are still unsaved."""
        for result in self.unsaved:
            with self._lock:  # saved where its job was to be (a folder its submitter named)
                owner = next((job for job in self._jobs.values() if job.result is result), None)
            path, error = self._save(result, owner)
            if path is not None:
                with self._lock:
                    self._unsaved.remove(result)
                    for job in self._jobs.values():
                        if job.result is result:
                            job.path, job.error = path, None
            emit(ImageSaved(result, path, error))
            if error is not None:
                break
        return len(self.unsaved)

    # -- persistence ----------------------------------------------------------------------------

    def _changed(self) -> None:
        """The queue changed: have the writer thread save it (called under the lock)."""
        if self._writer is not None:
            self._writer.post(self._persistent())
        if self.on_change is not None:
            self.on_change()

    def _persistent(self) -> list[Job]:
        """The jobs the queue file keeps: the running one (it starts again after a crash), the
        waiting ones, the failed ones not yet retried (with their reason: a prompt is never lost
        to a failure), and the finished members of groups still running (for their sheet)."""
        running = self._running
        if running is not None and self._closing:
            # Stopped by close(), not by its own doing: it runs again at the next start.
            running = dataclasses.replace(running, state=JobState.QUEUED)
        keep = [running] if running is not None and self._cancel_asked != running.id else []
        keep += [self._jobs[i] for i in self._waiting]
        keep += [
            j for j in self._jobs.values() if j.state is JobState.FAILED and j.retried_as is None and not j.dismissed
        ]
        open_groups = {j.group for j in keep if j.group}
        done = [
            j for j in self._jobs.values() if j.group in open_groups and j.state is JobState.DONE and j.path is not None
        ]
        return done + keep

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue file holds the queue as it is now; False when it could not be
        written (store_error says why) or there is no queue file."""
        return self._writer.flush(timeout) if self._writer is not None else False

    @property
    def store_error(self) -> str | None:
        """Why the queue file could not be written the last time, if it could not."""
        return self._writer.error if self._writer is not None else None

    def close(self) -> None:
        """Stop the running job and write the queue one last time: what waits stays in the file
        for the next start."""
        with self._lock:
            self._closing = True  # the running job is stopped, not cancelled: it stays queued
            self._cancel.set()
            self._changed()
        if self._writer is not None:
            self._writer.flush(10.0)
            self._writer.stop()


def load_model(engine: Engine, settings: Settings, emit: Emit) -> bool:
    """Load the first task's model and make that task active, on the caller's thread (it takes
    a while): ModelLoading as it goes, then TaskSwitched and ModelReady, or ModelFailed. Temp
    files a killed writer left in the output folder go first (atomic writes leave nothing else)."""
    clean_stale_partials(settings.output_dir)
    first = settings.tasks[0]
    try:
        model = engine.load(on_progress=lambda text: emit(ModelLoading(text)), source=first.model)
        switch = engine.switch_task(first.name)
    except EngineError as exc:
        emit(ModelFailed(str(exc), None))
        return False
    emit(TaskSwitched(switch))
    emit(ModelReady(model))
    return True


def switch_model(engine: Engine, source: str, task: str | None, emit: Emit) -> bool:
    """Replace the base model with `source` (the old one is freed first), then switch to `task`'s
    adapters again on it: ModelLoading as it goes, then ModelReady and TaskSwitched (carrying the
    model's switch), or ModelFailed naming the model still loaded, or TaskSwitchFailed."""
    try:
        switch = engine.switch_model(source, on_progress=lambda text: emit(ModelLoading(text)))
    except EngineError as exc:
        emit(ModelFailed(str(exc), engine.model, replacing=True))
        return False
    emit(ModelReady(switch.model, switch))
    if task is None:
        return True
    try:
        task_switch = engine.switch_task(task)
    except EngineError as exc:
        emit(TaskSwitchFailed(task, str(exc)))
        return False
    emit(TaskSwitched(dataclasses.replace(task_switch, model_switch=switch)))
    return True


def size_of(settings: Settings, job: Job) -> tuple[int, int]:
    """The size `job` draws at: its request's, else its task's (512 for a task that is gone)."""
    try:
        task = settings.task(job.task)
        width, height = task.width, task.height
    except ConfigError:
        width = height = 512
    return job.request.width or width, job.request.height or height


def steps_of(settings: Settings, job: Job) -> int:
    """The steps `job` will run: its request's, else its task's (0 for a task that is gone)."""
    if job.request.steps is not None:
        return job.request.steps
    try:
        return settings.task(job.task).steps
    except ConfigError:
        return 0


def eta_s(settings: Settings, running: Job | None, waiting: list[Job], job_id: int, rate: float | None) -> float | None:
    """Seconds until `job_id` ends, from the steps ahead of it (the running job's left, and the
    waiting ones' up to it) at `rate` seconds a step; None without a rate, or for a job that is
    neither running nor waiting."""
    if rate is None:
        return None
    steps = 0
    if running is not None:
        steps += max(0, (running.steps_total or steps_of(settings, running)) - running.steps_done)
        if running.id == job_id:
            return steps * rate
    ids = [job.id for job in waiting]
    if job_id not in ids:
        return None
    for job in waiting[: ids.index(job_id) + 1]:
        steps += steps_of(settings, job)
    return steps * rate


class _QueueWriter:
    """Writes the newest snapshot of the queue on a thread of its own, so that a key that moves
    a job never waits for the disk; snapshots that pile up while one is written collapse into
    the newest."""

    def __init__(self, store: QueueStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._jobs: list[Job] | None = None
        self._posted = self._written = 0
        self._ok = True
        self._stopped = False
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def post(self, jobs: list[Job]) -> None:
        with self._cond:
            # Records now, under the session's lock: the jobs change after this returns.
            self._jobs = [dataclasses.replace(job) for job in jobs]
            self._posted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spatiora-queue-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        with self._cond:
            done = self._cond.wait_for(lambda: self._written >= self._posted or self._stopped, timeout)
            return done and self._ok and self._thread is not None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._store.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs is not None or self._stopped)
                if self._stopped:  # close() flushed first: what comes after quitting is not kept
                    return
                jobs, self._jobs, target = self._jobs or [], None, self._posted
            try:
                self._store.save(jobs)
                ok, error = True, None
            except QueueFileError as exc:
                ok, error = False, str(exc)
            with self._cond:
                self._ok, self.error = ok, error
                self._written = target
                self._cond.notify_all()
