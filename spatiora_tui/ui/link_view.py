"""The engine's process as the screen shows it, when the engine runs apart from this window (the
user's own engine, or another machine's): its words on the status line (not on the terminal the
UI draws on), a dropped link that holds the queue until a key starts the engine again, and a
model another window or command chose, with who chose it."""

from __future__ import annotations

from collections.abc import Callable

from spatiora_tui.engine.api import EngineError
from spatiora_tui.jobs import events
from spatiora_tui.jobs.session import Session
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.remote.telemetry import RemoteTelemetry
from spatiora_tui.ui.host import Host
from spatiora_tui.ui.messages import EngineLinkChanged, EngineRestarted, EngineSaid, SessionNews
from spatiora_tui.ui.pacing import StepThrottle
from spatiora_tui.ui.text import markup_safe


class LinkView:
    def __init__(self, app: Host, engine: RemoteEngine) -> None:
        self._app = app
        self.engine = engine

    def watch(self) -> list[Callable[[], None]]:
        """Listen to the link, the engine's words and its model; returns the listeners' removers."""
        app, engine = self._app, self.engine
        again = f"{app.key('restart_engine')} starts it again"

        def said(text: str) -> None:
            app.post_message(EngineSaid(text))

        engine.say = said
        engine.after_drop = again
        if isinstance(app.telemetry, RemoteTelemetry):
            app.telemetry.down_hint = again
        unwatch: list[Callable[[], None]] = []
        if isinstance(app.session, SessionMirror):
            steps = StepThrottle(1.0 / app.settings.ui.preview_fps)
            unwatch.append(app.session.watch(lambda event: app.post_event(event, steps, wait=False)))
        elif isinstance(app.session, Session):  # (the engine's own queue waits in its queue file)
            unwatch.append(app.session.hold_while_down(engine.watch_link))
        return [
            *unwatch,
            engine.watch_link(lambda why: app.post_message(EngineLinkChanged(why))),
            engine.watch_models(
                lambda chosen: app.post_message(SessionNews(events.ModelReady(chosen[0], by=chosen[1])))
            ),
        ]

    def changed(self, why: str | None) -> None:
        """The link dropped, saying `why`, or is up again (None)."""
        app = self._app
        app.refresh_bindings()
        if why is None:
            if self.engine.model is not None:
                app.show_model(self.engine.model)
            app.kick()  # a queue held while it was down goes on
            return
        waiting = len(app.session.waiting())
        held = f"; {waiting} queued job(s) wait for it" if waiting else ""
        line = f"{why} · {app.key('restart_engine')} starts it again{held}"
        app.sub_title = "engine down"
        app.say(line, error=True)
        app.notify(markup_safe(line), title="Your engine stopped", severity="error", timeout=15)

    def restart(self) -> None:
        """The restart key: start the engine again in a worker, unless it runs or is starting."""
        app = self._app
        if self.engine.down is None:
            app.say("the engine is running: nothing to restart")
            return
        if app.restarting:
            app.say("your engine is starting…")
            return
        app.say("starting your engine again…")
        app.restart_engine(app.task_pane.active)

    def run_restart(self, task: str | None) -> None:
        """(In a worker thread.) Start the engine; switch it back to this window's task."""
        try:
            model = self.engine.restart()
            if task is not None and self.engine.active_task != task:
                self._app.post_message(SessionNews(events.TaskSwitched(self.engine.switch_task(task))))
        except EngineError as exc:
            self._app.post_message(EngineRestarted(None, str(exc)))
            return
        self._app.post_message(EngineRestarted(model))

    def restarted(self, message: EngineRestarted) -> None:
        app = self._app
        if message.error is not None:
            app.say(f"{message.error} · {app.key('restart_engine')} tries again", error=True)
            return
        app.refresh_bindings()  # the restart key leaves the footer
        model = message.model or self.engine.model
        if model is not None:
            app.show_model(model)
        waiting = len(app.session.waiting())
        app.say("your engine is running again" + (f": the queue goes on with {waiting} job(s)" if waiting else ""))
        app.kick()
