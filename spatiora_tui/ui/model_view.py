"""The base model as the screen shows it: loading, ready (the first, one this window chose, or
one another window or command chose on the shared engine), failed; the title line that names it
and the preview budget that follows its device.

The App hands each model event here (`show`); `ready` is the one state kept: whether generate
and task switches can go to the engine now.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import ModelInfo
from spatiora_tui.jobs import events
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.ui.host import Host
from spatiora_tui.ui.pacing import auto_budget
from spatiora_tui.ui.text import markup_safe

#: Said once with a random-weights model ready.
NOISE = " — images look like noise, every mechanism is real; set model.source for a real model (docs/models.md)"


class ModelView:
    def __init__(self, app: Host) -> None:
        self._app = app
        self.ready = False  # the base model is loaded and the first task is active
        self._shows: dict[type, Callable[[Any], None]] = {
            events.ModelLoading: self._loading,
            events.ModelReady: self._came,
            events.ModelFailed: self._failed,
        }

    def show(self, event: events.SessionEvent) -> bool:
        """Show `event` if it is about the model; False for the App's other events."""
        shows = self._shows.get(type(event))
        if shows is not None:
            shows(event)
        return shows is not None

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self._app.refresh_bindings()  # generate is dimmed while no model is ready

    def chosen(self, source: str | None) -> None:
        """The model picker's answer: load `source` in place of the current model."""
        if source is None:
            return
        app = self._app
        self.set_ready(False)
        app.preview_pane.show_loading(f"loading {Path(source).name}…")
        app.say(f"loading {Path(source).name} in the background (the current model is freed first)…")
        app.load_model(source, app.task_pane.active)

    def budget(self, device: str) -> float:
        """The preview pacer's CPU budget for an engine computing on `device`."""
        budget = self._app.settings.ui.preview_cpu_budget
        return auto_budget(self._app.linked is not None, device) if budget == "auto" else float(budget)

    def show_model(self, model: ModelInfo) -> None:
        """`model` in the title, the task pane and the preview pane's title."""
        app = self._app
        app.frames.pacer.budget = self.budget(model.device)
        offload = f" · offload {model.offload}" if model.offload != "none" else ""
        compiled = f" · compiled ({model.compiled})" if model.compiled else ""
        app.sub_title = (
            f"{model.name} · {model.variant or model.family_label} · {model.device} {model.dtype}{offload}{compiled}"
        )
        app.task_pane.set_model(model.name)
        app.preview_pane.set_method(model.preview)

    def _loading(self, event: events.ModelLoading) -> None:
        self._app.preview_pane.show_loading(f"{event.text}…")
        self._app.say(f"{event.text}…")

    def _came(self, event: events.ModelReady) -> None:
        """A model is ready: the first, one this window chose (its task switch says the rest),
        or one another window or command chose."""
        app, model = self._app, event.model
        self.set_ready(True)
        self.show_model(model)
        if event.by:
            app.preview_pane.model_ready(f"{model.name} is loaded (chosen by {event.by})")
            line = f"{event.by} switched the shared engine to {model.name}: your next images use it"
            app.say(line)
            app.notify(markup_safe(line), title="Model switched", timeout=10)
        elif event.switch is not None:
            app.say(event.switch.summary())
        else:
            app.preview_pane.model_ready(f"ready: type a prompt, press Enter or {app.key('generate')}")
            first = isinstance(app.session, SessionMirror) and app.session.first_sight()
            queue = app.engine_queue_note() if first else ""
            app.say(
                f"model ready: {model.name}"
                + (f" · {queue}" if queue else "")
                + (NOISE if model.random_weights else "")
            )

    def _failed(self, event: events.ModelFailed) -> None:
        app = self._app
        self.set_ready(event.model is not None)
        if event.model is not None:
            self.show_model(event.model)
            app.preview_pane.model_ready(f"{event.model.name} is still loaded")
        else:
            app.sub_title = "model failed to load"
            app.preview_pane.model_ready("the model failed to load; see the status line")
        if event.replacing:
            app.say(f"could not load the model: {event.error}", error=True)
        else:
            app.say(f"model failed to load: {event.error}. Fix config.toml and restart.", error=True)
