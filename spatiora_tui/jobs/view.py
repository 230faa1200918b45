"""What a front end holds its queue by: the Session itself (jobs/session.py: the queue runs in
this process) or a mirror of the one the user's engine keeps (remote/mirror.py: it runs there,
and this process shows it). The TUI and its queue screen work with either."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from spatiora_tui.config import Settings
from spatiora_tui.engine.api import EngineError, GenerationRequest, GenerationResult
from spatiora_tui.jobs.events import Emit, StepHook
from spatiora_tui.jobs.job import Job, JobKind, JobState
from spatiora_tui.jobs.store import Orphan
from spatiora_tui.jobs.sweep import Axis, SweepError

#: Where a job's image goes when its submitter says: (folder, file stem or None).
Output = tuple[Path, str | None] | None


class Queue(Protocol):
    """A queue of jobs run one at a time on one engine (see Session for what each does)."""

    settings: Settings

    def job(self, job_id: int) -> Job: ...
    def jobs(self) -> list[Job]: ...
    def waiting(self) -> list[Job]: ...
    @property
    def running(self) -> Job | None: ...
    @property
    def busy(self) -> bool: ...
    @property
    def paused(self) -> bool: ...
    @property
    def unsaved(self) -> list[GenerationResult]: ...
    @property
    def store_error(self) -> str | None: ...
    def made(self) -> set[Path]: ...
    def position(self, job_id: int) -> int: ...
    def eta_s(self, job_id: int) -> float | None: ...
    def steps_of(self, job: Job) -> int: ...
    def submit(
        self,
        request: GenerationRequest,
        *,
        kind: JobKind = JobKind.IMAGE,
        group: str = "",
        label: str = "",
        output: Output = None,
    ) -> Job: ...
    def submit_batch(self, request: GenerationRequest, count: int, output: Output = None) -> list[Job]: ...
    def submit_sweep(self, base: GenerationRequest, axes: list[Axis], output: Output = None) -> list[Job]: ...
    def cancel(self, job_id: int) -> bool: ...
    def cancel_all(self) -> int: ...
    def move(self, job_id: int, delta: int) -> bool: ...
    def retry(self, job_id: int) -> Job | None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def load_model(self, emit: Emit = ...) -> bool: ...
    def switch_model(self, source: str, task: str | None, emit: Emit = ...) -> bool: ...
    def request_switch(self, task: str) -> None: ...
    def orphans(self) -> list[Orphan]: ...
    def adopt(
        self, orphans: Iterable[Orphan], interrupted: str | None = None, keep_ids: bool = False
    ) -> tuple[int, list[str]]: ...
    def wants_runner(self) -> bool: ...
    def run_next(self, emit: Emit = ..., on_step: StepHook | None = None) -> bool: ...
    def release_runner(self) -> None: ...
    def save_again(self, emit: Emit = ...) -> int: ...
    def close(self) -> None: ...


def queue_summary(queue: Queue) -> str:
    """What a queue holds, e.g. "job 3 running, 2 waiting, 3 done, 1 failed" ("" when empty)."""
    jobs = queue.jobs()
    running = queue.running
    counts = [
        (len(queue.waiting()), "waiting"),
        (sum(job.state is JobState.DONE for job in jobs), "done"),
        (sum(job.state is JobState.FAILED for job in jobs), "failed"),
    ]
    parts = [f"job {running.id} running"] if running is not None else []
    return ", ".join(parts + [f"{count} {what}" for count, what in counts if count])


def submit_form(
    queue: Queue, request: GenerationRequest, count: int = 1, axes: list[Axis] | None = None
) -> tuple[list[Job], str]:
    """Queue what a front end's form asks for: one image, a batch of `count`, or a sweep over
    `axes` (one image per cell). The jobs, and what they are in words: "job 4", "a batch of 3
    (jobs 4-6)", "a sweep of 6 (3 seed x 2 steps; jobs 4-9)". EngineError when the request
    fails the check every front end's request goes through (engine/requests.py), or the sweep
    cannot be made."""
    if axes:
        try:
            jobs = queue.submit_sweep(request, axes)
        except SweepError as exc:
            raise EngineError(f"sweep: {exc}") from exc
        shape = " x ".join(f"{len(axis.values)} {axis.title}" for axis in axes)
        return jobs, f"a sweep of {len(jobs)} ({shape}; jobs {jobs[0].id}-{jobs[-1].id})"
    if count > 1:
        jobs = queue.submit_batch(request, count)
        return jobs, f"a batch of {count} (jobs {jobs[0].id}-{jobs[-1].id})"
    job = queue.submit(request)
    return [job], f"job {job.id}"
