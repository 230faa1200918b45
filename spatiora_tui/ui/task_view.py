"""The task modes as the screen shows them: the task new requests are for, a switch asked for
(at once when nothing runs, else once the queue is done), a switch done (its adapters, its
timings, a model the task brings) or failed.

The App hands each task event here (`show`); this object keeps the screen's own state: the task
the user picked last, and a line to say with the next switch.
"""

from __future__ import annotations

from spatiora_tui.jobs import events
from spatiora_tui.ui.host import Host
from spatiora_tui.ui.text import markup_safe


class TaskView:
    def __init__(self, app: Host) -> None:
        self._app = app
        self._chosen: str | None = None  # the task the user picked last (its switch may still wait)
        self.note: str | None = None  # said with the next task switch's line

    @property
    def current(self) -> str:
        """The task new requests are for: the one the user picked last (its switch may still
        wait for the queue), else the active one."""
        app = self._app
        return self._chosen or app.task_pane.active or app.settings.tasks[0].name

    def request(self, name: str) -> None:
        """Make `name` the task of new requests: its settings fill the prompt pane now; its
        adapters switch at once when nothing runs, else once the queue is done (queued jobs
        switch as each one needs)."""
        app = self._app
        if not app.model_ready:
            app.say("the model is still loading; switch tasks once it is ready")
            return
        if name == self.current and name == app.task_pane.active:
            app.say(f"{name} is already the active task")
            return
        if name != self.current:
            app.prompt_pane.fill_from_task(app.settings.task(name))
        self._chosen = name
        app.session.request_switch(name)
        if app.session.busy:
            app.task_pane.set_pending(name if name != app.task_pane.active else None)
            app.say(f"task {name}: new requests use it; its adapters switch when the queue is done")
        app.kick()

    def show(self, event: events.SessionEvent) -> bool:
        """Show `event` if it is a task switch's; False for the App's other events."""
        if isinstance(event, events.TaskSwitched):
            self._switched(event)
        elif isinstance(event, events.TaskSwitchFailed):
            self._failed(event)
        else:
            return False
        return True

    def _switched(self, message: events.TaskSwitched) -> None:
        app, switch = self._app, message.switch
        text = switch.summary()
        if switch.model_switch is not None:
            app.show_model(switch.model_switch.model)
            if app.settings.task(switch.task).model is not None:
                app.task_pane.record_load(switch.task, switch.model_switch.duration_ms)
            app.preview_pane.model_ready(
                f"{switch.model_switch.model.name} ready: type a prompt, press Enter or {app.key('generate')}"
            )
            text = f"{switch.model_switch.summary()}; {text}"
            for note in switch.model_switch.notes:
                app.notify(markup_safe(note), severity="warning", timeout=10)
        app.task_pane.set_active(switch.task, text, switch.adapters, switch.warning)
        if switch.task == self._chosen or self._chosen is None:
            app.task_pane.set_pending(None)
        if switch.warning:
            app.say(f"task {switch.task}: {switch.warning}", error=True)
        elif app.model_ready and not message.job_id:
            loaded, self.note = self.note or "", None
            app.say(f"{loaded} · task {switch.task}: {text}" if loaded else f"task {switch.task}: {text}")

    def _failed(self, message: events.TaskSwitchFailed) -> None:
        app = self._app
        app.task_pane.set_pending(None)
        if not message.job_id:
            self._chosen = app.task_pane.active
        app.say(f"could not switch to {message.task}: {message.error}", error=True)
