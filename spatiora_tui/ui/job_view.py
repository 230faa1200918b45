"""The running job as the main screen shows it: its start on the preview pane and the status
line, its steps as the frame clock lets them through, its end (image, figures, saved path, a
batch's sheet so far), a group's end and a failure.

The App hands each job event here (`show`); this object keeps the state that is the screen's
own, not the session's: which job the preview pane shows, and whose stage peaks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from spatiora_tui.jobs import events
from spatiora_tui.jobs.job import Job
from spatiora_tui.jobs.sheets import GroupSheets
from spatiora_tui.ui.host import Host
from spatiora_tui.ui.screens.queue import QueueScreen
from spatiora_tui.ui.text import markup_safe


class JobView:
    def __init__(self, app: Host) -> None:
        self._app = app
        self.running: int | None = None  # the job the preview pane shows
        self.task: str | None = None  # the last shown job's task: the hardware pane shows its stage peaks
        self.groups = GroupSheets()  # the batches and sweeps under way, for their sheets so far
        self._shows: dict[type, Callable[[Any], None]] = {
            events.JobStepped: self._stepped,
            events.JobFinished: self._finished,
            events.JobFailed: self._failed,
            events.GroupFinished: self._group_finished,
        }

    def show(self, event: events.SessionEvent, painted: threading.Event) -> bool:
        """Show `event` if it is a job's; False for the App's other events. `painted` is set
        once a job's start is on screen (the runner waits for it before denoising)."""
        if isinstance(event, events.JobStarted):
            self._started(event, painted)
            return True
        shows = self._shows.get(type(event))
        if shows is None:
            return False
        shows(event)
        return True

    def others(self, job: Job) -> str:
        """Who queued `job`, when it was not this window: another window or command on the
        user's engine ("" for this window's own)."""
        linked = self._app.linked
        return job.by if job.by and (linked is None or job.by != linked.label) else ""

    def queue_note(self) -> str:
        session = self._app.session
        waiting = len(session.waiting())
        if not waiting:
            return ""
        return f" · {waiting} waiting" + (" (queue paused)" if session.paused else "")

    def draw_step(self, step: events.JobStepped) -> None:
        """A step the frame clock lets through: progress, and on the queue screen its row."""
        app = self._app
        app.preview_pane.show_step(step.preview, step.rate)
        if isinstance(app.screen, QueueScreen):
            app.screen.show_progress(step.job_id)

    def ended(self) -> None:
        """The running job is over (finished, failed, or its worker crashed)."""
        app = self._app
        app.frame_timer.pause()
        app.frames.stop()
        app.prompt_pane.steady_cursor(False)
        self.running = None

    def _started(self, message: events.JobStarted, painted: threading.Event) -> None:
        app = self._app
        job = app.session.job(message.job_id)
        self.running = job.id
        self.task = job.task
        size = f"{message.width}x{message.height}"
        note = f"· the first image at {size} compiles the UNet first (once per size)" if message.compiles_first else ""
        app.preview_pane.started(message.steps, message.width or 512, message.height or 512, note)
        label = f" · {job.label}" if job.label else ""
        others = self.others(job)
        by = f" · queued by {others}" if others else ""
        waiting = len(app.session.waiting())
        more = f" · {waiting} waiting" if waiting else ""
        app.say(f"generating job {job.id} ({job.task}{label}{by})…{more} · {app.key('cancel')} cancels")
        app.call_after_refresh(self._begin, painted)

    def _begin(self, painted: threading.Event) -> None:
        """The job's start is on screen: steps may come."""
        app = self._app
        app.prompt_pane.steady_cursor(True)
        app.frames.start()
        app.frame_timer.resume()
        painted.set()

    def _stepped(self, message: events.JobStepped) -> None:
        if message.job_id == self.running:
            self._app.frames.offer_step(message)

    def _finished(self, message: events.JobFinished) -> None:
        app = self._app
        result = message.result
        job = app.session.job(message.job_id)
        self.ended()
        app.prompt_pane.show_last_seed(result.params.seed)
        if result.cancelled:
            saved = "cancelled: nothing saved"
            app.say(f"job {job.id} {message.cancelled_words()}; nothing saved")
        elif message.path is not None:
            saved = f"saved {markup_safe(str(message.path))}"
            app.say(f"saved {message.path}" + self.queue_note())
        else:
            app.refresh_bindings()
            saved = f"[b]not saved[/] — the image is kept in memory: {app.key('save')} saves it again"
            app.say(f"could not save the image: {message.save_error}", error=True)
        for warning in result.warnings:
            app.notify(markup_safe(warning), severity="warning", timeout=8)
        pacer = app.frames.pacer  # (its counts stay until the next job starts)
        app.preview_pane.finished(result, saved, (pacer.drawn, pacer.drawn_per_s()))
        sheet = self.groups.add(job, result.image) if job.group and result.image is not None else None
        if sheet is not None:  # a batch's images so far, or a sweep's grid: the next job's previews take over
            app.preview_pane.show_sheet(sheet)

    def _failed(self, message: events.JobFailed) -> None:
        self.ended()
        self._app.preview_pane.failed()
        prefix = "out of memory" if message.out_of_memory else "generation failed"
        self._app.say(f"{prefix} (job {message.job_id}, {message.task}): {message.error}", error=True)

    def _group_finished(self, message: events.GroupFinished) -> None:
        self.groups.drop(message.group)
        if message.path is not None:
            sheet = "grid" if message.group.startswith("sweep") else "contact sheet"
            self._app.say(f"{message.group} done: {sheet} {message.path}")
        else:
            self._app.say(f"{message.group} done: {message.error}")
