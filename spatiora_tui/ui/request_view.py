"""The prompt form's road into the Session: a request made from the form (checked and queued,
with where it waits), and, back the other way, an image from the history handed to the form
(its settings to make it again, or itself as the init image).

The App hands the generate key and the history's pick here; this object keeps no state of its
own: the form is the prompt pane's, the queue the Session's, the task TaskView's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual.widgets import Input

from spatiora_tui.engine.api import EngineError
from spatiora_tui.engine.init_image import DEFAULT_STRENGTH
from spatiora_tui.jobs.view import submit_form
from spatiora_tui.outputs import OutputError, request_from_image
from spatiora_tui.ui.host import Host
from spatiora_tui.ui.screens.history import Pick
from spatiora_tui.ui.task_view import TaskView
from spatiora_tui.ui.text import markup_safe, ordinal
from spatiora_tui.ui.widgets.prompt_pane import FormError


class RequestView:
    def __init__(self, app: Host, tasks: TaskView) -> None:
        self._app = app
        self._tasks = tasks

    def generate(self) -> None:
        """The form's request (or its batch, or its sweep) checked and queued for the task new
        requests are for; said where it waits when something runs before it."""
        app = self._app
        if not app.model_ready:
            app.say("the model is still loading; generate is available once it is ready")
            return
        session, pane = app.session, app.prompt_pane
        try:
            request = pane.request(self._tasks.current)
            count = pane.count()
            axes = pane.sweep()
            if axes and count > 1:
                raise FormError("a sweep makes one image per cell: set the batch count to 1, or empty the sweep")
        except FormError as exc:
            app.say(str(exc), error=True)
            return
        behind = session.running is not None or bool(session.waiting())
        try:
            jobs, what = submit_form(session, request, count, axes)
        except EngineError as exc:
            app.say(str(exc), error=True)
            return
        if axes and not (behind or session.paused):
            app.say(f"{what}: the grid is saved when the last cell ends")
        if behind or session.paused:
            where = ordinal(session.position(jobs[0].id))
            paused = " — the queue is paused" if session.paused else ""
            app.say(f"queued {what}: {where} in the queue{paused} ({app.key('queue')} shows it)")
        app.kick()

    def picked(self, pick: Pick | None) -> None:
        """An image picked in the history: `u` fills the form with its settings, `i` makes it
        the init image."""
        if pick is None:
            return
        app = self._app
        if pick.use == "init":
            app.prompt_pane.start_from(str(pick.path))
            strength = app.prompt_pane.query_one("#strength", Input).value or f"{DEFAULT_STRENGTH:g}"
            app.say(
                f"init image {pick.path.name} at strength {strength}; the size follows its shape "
                f"(type one to crop it): {app.key('generate')} starts from it"
            )
            return
        self.use_settings(pick.path)

    def use_settings(self, path: Path) -> None:
        """Fill the prompt pane with the settings an image was made with: its task (switched
        to), prompt, negative prompt, seed, steps, guidance, size, sampler, init image and
        strength."""
        app = self._app
        chosen = self._tasks.current
        try:
            request, notes = request_from_image(path, chosen)
        except OutputError as exc:
            app.say(str(exc), error=True)
            return
        if request.task not in [task.name for task in app.settings.tasks]:
            notes.append(f"its task {request.task!r} is not in config.toml: it runs as {chosen}")
            request = dataclasses.replace(request, task=chosen)
        if request.task != chosen:
            self._tasks.request(request.task)  # fills the pane from the task first
        app.prompt_pane.fill_from_request(request)
        loaded = f"settings of {path.name} loaded ({request.task}): {app.key('generate')} makes it again"
        if app.session.busy or request.task != app.task_pane.active:
            self._tasks.note = loaded  # said with the switch's own line, which comes later
        app.say(loaded)
        for note in notes:
            app.notify(markup_safe(note), severity="warning", timeout=10)
