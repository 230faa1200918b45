"""The Spatiora terminal application.

Data flows one way: a key press makes a request, a worker thread calls the engine, the engine
calls back per step, the worker posts typed messages, the UI draws. Only cancel flows back.
The first frame is drawn before torch is imported: the model loads in a worker.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input
from textual.worker import Worker, WorkerState

from spatiora_tui.config import Settings, user_state_dir
from spatiora_tui.engine.api import Engine, EngineError
from spatiora_tui.engine.init_image import DEFAULT_STRENGTH
from spatiora_tui.hw import HardwareFeed, Telemetry, process_age_s
from spatiora_tui.jobs import events
from spatiora_tui.jobs.events import SessionEvent
from spatiora_tui.jobs.job import Job
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.sheets import GroupSheets
from spatiora_tui.jobs.store import Orphan, QueueStore
from spatiora_tui.jobs.view import Queue, queue_summary, submit_form
from spatiora_tui.outputs import OutputError, request_from_image
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.remote.telemetry import RemoteTelemetry
from spatiora_tui.ui.images import choose_drawing, describe, widget_class
from spatiora_tui.ui.keys import KEY_ACTIONS, KEYS, bindings
from spatiora_tui.ui.messages import (
    EngineLinkChanged,
    EngineRestarted,
    EngineSaid,
    HardwareSampled,
    QueueFound,
    SessionNews,
)
from spatiora_tui.ui.pacing import FrameClock, PreviewPacer, StepThrottle, auto_budget
from spatiora_tui.ui.screens.history import HistoryScreen, Pick
from spatiora_tui.ui.screens.models import ModelPicker
from spatiora_tui.ui.screens.queue import QueueScreen
from spatiora_tui.ui.screens.resume import RESUME, ResumeQueue, settle
from spatiora_tui.ui.text import markup_safe, ordinal
from spatiora_tui.ui.widgets.hardware_pane import HardwarePane
from spatiora_tui.ui.widgets.preview_pane import PreviewPane
from spatiora_tui.ui.widgets.prompt_pane import FormError, PromptPane
from spatiora_tui.ui.widgets.readout import Readout
from spatiora_tui.ui.widgets.task_pane import TaskPane

#: What shows each of the session's events (but JobStarted, which also carries its paint signal).
_SHOWS: dict[type, str] = {
    events.JobStepped: "_job_stepped",
    events.JobFinished: "_job_finished",
    events.JobFailed: "_job_failed",
    events.GroupFinished: "_group_finished",
    events.QueueChanged: "_queue_changed",
    events.TaskSwitched: "_task_switched",
    events.TaskSwitchFailed: "_task_switch_failed",
    events.ImageSaved: "_image_saved",
    events.ModelLoading: "_model_loading",
    events.ModelReady: "_model_came",
    events.ModelFailed: "_model_failed",
}

#: Longest a generation waits for the screen to show that it started.
PAINT_WAIT_S = 0.5


class SpatioraApp(App[None], inherit_bindings=False):
    CSS_PATH = "app.tcss"
    TITLE = "Spatiora"
    # Narrow terminals get a two-column layout (app.tcss): three columns would squeeze the preview out.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = bindings()

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        renderer: str | None = None,
        telemetry: HardwareFeed | None = None,
        exit_after_first_frame: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.renderer = renderer or settings.ui.renderer
        self.drawing = choose_drawing(self.renderer)  # how images are drawn here, and why
        # Shared with the engine, which marks its stages on it; its thread samples the hardware.
        self.telemetry: HardwareFeed = telemetry or Telemetry.from_settings(settings)
        self._model_ready = False
        # The queue: on the user's engine, a mirror of the one it keeps (every window shows the
        # same, and it runs on when this one closes); else a Session run here, whose queue file
        # in the state folder keeps what waits across a crash or a dropped SSH session.
        self.session: Queue
        if isinstance(engine, RemoteEngine) and engine.hosts_queue:
            self.session = SessionMirror(engine, settings, say=lambda text: self.post_message(EngineSaid(text)))
        else:
            self.session = Session(
                engine, settings, store=QueueStore(user_state_dir() / "queues"), telemetry=self.telemetry
            )
        self._chosen: str | None = None  # the task new requests are for (see chosen_task)
        self._running_job: int | None = None  # the job the preview pane shows
        self._groups = GroupSheets()  # the batches and sweeps under way, for their sheets so far
        self._store_error_said: str | None = None
        self._switch_note: str | None = None  # said with the next task switch's line
        self._peaks_task: str | None = None  # the task whose stage peaks the pane shows
        # While generating, the newest step, image and hardware sample wait for the next frame.
        self.frames = FrameClock(
            PreviewPacer(settings.ui.preview_fps, self._budget("cpu")),
            draw_step=self._draw_step,
            draw_image=lambda image: self.preview_pane.show_image(image),
            draw_sample=self._show_sample,
        )
        #: What a second press of the same key confirms: "quit" (with images not saved), or
        #: "cancel N" (job N, which another window or command queued).
        self._confirm: str | None = None
        self._exit_after_first_frame = exit_after_first_frame
        self._unwatch: list[Callable[[], None]] = []  # the engine's and telemetry's listeners, removed at exit
        #: Seconds from process start to the first frame (set when it is drawn).
        self.first_frame_age_s: float | None = None
        self.set_keymap({action: getattr(settings.keys, action) for action in KEY_ACTIONS})

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: messages may arrive while another screen (history) is on top.
        samples = max(1, round(self.settings.ui.sparkline_minutes * 60 * self.settings.ui.hardware_hz))
        self.task_pane = TaskPane(self.settings.tasks, id="tasks")
        self.prompt_pane = PromptPane(id="prompt-pane")
        self.preview_pane = PreviewPane(widget_class(self.drawing), describe(self.drawing), id="preview")
        minutes = self.settings.ui.sparkline_minutes
        self.hardware_pane = HardwarePane(samples, f"{minutes:g} min", hz=self.settings.ui.hardware_hz, id="hardware")
        self.status_line = Readout("", id="status")
        yield Header(show_clock=False, icon="◧")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield self.task_pane
                yield self.prompt_pane
            yield self.preview_pane
            yield self.hardware_pane
        yield self.status_line
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "loading the model…"
        self.prompt_pane.fill_from_task(self.settings.tasks[0])
        self.prompt_pane.query_one("#prompt", Input).focus()
        self.hardware_pane.show_peaks({}, None, {})
        self.say("loading the model in the background; generate is available once it is ready")
        self.call_after_refresh(self._first_frame)
        self._frame_timer = self.set_interval(1.0 / self.settings.ui.preview_fps, self.frames.tick, pause=True)
        if self._exit_after_first_frame:
            return
        self._watch_engine()
        self._model_work()
        self._sample_hardware()

    def _first_frame(self) -> None:
        self.first_frame_age_s = process_age_s()
        if self._exit_after_first_frame:
            self.exit()

    @property
    def model_ready(self) -> bool:
        """True once the base model is loaded and the first task is active."""
        return self._model_ready

    # -- status line --------------------------------------------------------------------------

    def say(self, text: str, error: bool = False) -> None:
        status = self.status_line
        status.set_class(error, "error")
        status.show(markup_safe(text))

    # -- the base model -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _model_work(self, source: str | None = None, task: str | None = None) -> None:
        """Load the first model (`source` None), or replace it with `source` and switch to `task`
        on it: Session operations, whose events come here as messages."""
        emit = lambda event: self.post_message(SessionNews(event))  # noqa: E731
        if source is not None:
            self.session.switch_model(source, task, emit)
            return
        if self.session.load_model(emit):
            orphans = self.session.orphans()  # queues that sessions which ended left behind
            if orphans:
                self.post_message(QueueFound(orphans))

    def action_models(self) -> None:
        if not self._model_ready:
            self.say("the model is still loading; pick another one once it is ready")
            return
        if self.session.busy or self.session.waiting():
            self.say(f"jobs are running or waiting; pick a model when the queue is done ({self._key('queue')})")
            return
        self.push_screen(ModelPicker(self.engine), self._model_chosen)

    def _model_chosen(self, source: str | None) -> None:
        if source is None:
            return
        self._model_ready = False
        self.refresh_bindings()
        self.preview_pane.show_loading(f"loading {Path(source).name}…")
        self.say(f"loading {Path(source).name} in the background (the current model is freed first)…")
        self._model_work(source, self.task_pane.active)

    def _model_loading(self, event: events.ModelLoading) -> None:
        self.preview_pane.show_loading(f"{event.text}…")
        self.say(f"{event.text}…")

    def _model_came(self, event: events.ModelReady) -> None:
        """A model is ready: the first, one this window chose (its task switch says the rest),
        or one another window or command chose."""
        model = event.model
        self._model_ready = True
        self.refresh_bindings()
        self._show_model(model)
        if event.by:
            self.preview_pane.model_ready(f"{model.name} is loaded (chosen by {event.by})")
            line = f"{event.by} switched the shared engine to {model.name}: your next images use it"
            self.say(line)
            self.notify(markup_safe(line), title="Model switched", timeout=10)
        elif event.switch is not None:
            self.say(event.switch.summary())
        else:
            self.preview_pane.model_ready(f"ready: type a prompt, press Enter or {self._key('generate')}")
            first = isinstance(self.session, SessionMirror) and self.session.first_sight()
            queue = self._engine_queue_note() if first else ""
            noise = (
                " — images look like noise, every mechanism is real; set model.source for a real model (docs/models.md)"
            )
            self.say(
                f"model ready: {model.name}"
                + (f" · {queue}" if queue else "")
                + (noise if model.random_weights else "")
            )

    def _model_failed(self, event: events.ModelFailed) -> None:
        self._model_ready = event.model is not None
        self.refresh_bindings()
        if event.model is not None:
            self._show_model(event.model)
            self.preview_pane.model_ready(f"{event.model.name} is still loaded")
        else:
            self.sub_title = "model failed to load"
            self.preview_pane.model_ready("the model failed to load; see the status line")
        if event.replacing:
            self.say(f"could not load the model: {event.error}", error=True)
        else:
            self.say(f"model failed to load: {event.error}. Fix config.toml and restart.", error=True)

    def _budget(self, device: str) -> float:
        """The preview pacer's CPU budget for an engine computing on `device`."""
        budget = self.settings.ui.preview_cpu_budget
        return auto_budget(self._linked is not None, device) if budget == "auto" else float(budget)

    def _show_model(self, model: Any) -> None:
        self.frames.pacer.budget = self._budget(model.device)
        offload = f" · offload {model.offload}" if model.offload != "none" else ""
        compiled = f" · compiled ({model.compiled})" if model.compiled else ""
        self.sub_title = (
            f"{model.name} · {model.variant or model.family_label} · {model.device} {model.dtype}{offload}{compiled}"
        )
        self.task_pane.set_model(model.name)
        self.preview_pane.set_method(model.preview)

    # -- the engine's process ------------------------------------------------------------------

    def _watch_engine(self) -> None:
        """With the engine in another process: its words come to the status line (not onto the
        terminal the UI draws on), a dropped link holds the queue until a key restarts it, and a
        model another window chooses is shown here, with who chose it."""
        linked = self._linked
        if linked is None:
            return
        again = f"{self._key('restart_engine')} starts it again"

        def said(text: str) -> None:
            self.post_message(EngineSaid(text))

        linked.say = said
        linked.after_drop = again
        if isinstance(self.telemetry, RemoteTelemetry):
            self.telemetry.down_hint = again
        if isinstance(self.session, SessionMirror):
            steps = StepThrottle(1.0 / self.settings.ui.preview_fps)
            self._unwatch.append(self.session.watch(lambda event: self._post_event(event, steps, wait=False)))
        elif isinstance(self.session, Session):  # (the engine's own queue waits in its queue file)
            self._unwatch.append(self.session.hold_while_down(linked.watch_link))
        self._unwatch += [
            linked.watch_link(lambda why: self.post_message(EngineLinkChanged(why))),
            linked.watch_models(
                lambda chosen: self.post_message(SessionNews(events.ModelReady(chosen[0], by=chosen[1])))
            ),
        ]

    @property
    def _linked(self) -> RemoteEngine | None:
        """An engine in another process (the user's own, or another machine's): its link may drop."""
        return self.engine if isinstance(self.engine, RemoteEngine) else None

    def on_engine_link_changed(self, message: EngineLinkChanged) -> None:
        self.refresh_bindings()
        if message.why is None:
            if self.engine.model is not None:
                self._show_model(self.engine.model)
            self.kick()  # a queue held while it was down goes on
            return
        waiting = len(self.session.waiting())
        held = f"; {waiting} queued job(s) wait for it" if waiting else ""
        line = f"{message.why} · {self._key('restart_engine')} starts it again{held}"
        self.sub_title = "engine down"
        self.say(line, error=True)
        self.notify(markup_safe(line), title="Your engine stopped", severity="error", timeout=15)

    def on_engine_said(self, message: EngineSaid) -> None:
        self.say(message.text)

    def action_restart_engine(self) -> None:
        if self._linked is None or self._linked.down is None:
            self.say("the engine is running: nothing to restart")
            return
        if any(worker.group == "restart" and worker.is_running for worker in self.workers):
            self.say("your engine is starting…")
            return
        self.say("starting your engine again…")
        self._restart_engine(self.task_pane.active)

    @work(thread=True, exclusive=True, exit_on_error=False, group="restart")
    def _restart_engine(self, task: str | None) -> None:
        assert self._linked is not None
        try:
            model = self._linked.restart()
            if task is not None and self._linked.active_task != task:
                self.post_message(SessionNews(events.TaskSwitched(self._linked.switch_task(task))))
        except EngineError as exc:
            self.post_message(EngineRestarted(None, str(exc)))
            return
        self.post_message(EngineRestarted(model))

    def on_engine_restarted(self, message: EngineRestarted) -> None:
        if message.error is not None:
            self.say(f"{message.error} · {self._key('restart_engine')} tries again", error=True)
            return
        if message.model is not None:
            self._show_model(message.model)
        waiting = len(self.session.waiting())
        self.say("your engine is running again" + (f": the queue goes on with {waiting} job(s)" if waiting else ""))
        self.kick()

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Only the model's readiness dims a key. Dimming cancel between generations would rebuild
        # the footer as each one starts, on the UI thread, while denoising wants the CPU.
        if action == "generate" and not self._model_ready:
            return None  # shown dimmed until the model is ready
        if action == "save":
            return bool(self.session.unsaved)  # in the footer only while an image waits
        if action == "restart_engine":
            # In the footer only while the engine is down (the link's own state, not a copy).
            return self._linked is not None and self._linked.down is not None
        return True

    def _key(self, action: str) -> str:
        return str(getattr(self.settings.keys, action)).split(",")[0]

    @property
    def chosen_task(self) -> str:
        """The task new requests are for: the one the user picked last (its switch may still
        wait for the queue), else the active one."""
        return self._chosen or self.task_pane.active or self.settings.tasks[0].name

    def action_generate(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        if not self._model_ready:
            self.say("the model is still loading; generate is available once it is ready")
            return
        task = self.chosen_task
        try:
            request = self.prompt_pane.request(task)
            count = self.prompt_pane.count()
            axes = self.prompt_pane.sweep()
            if axes and count > 1:
                raise FormError("a sweep makes one image per cell: set the batch count to 1, or empty the sweep")
        except FormError as exc:
            self.say(str(exc), error=True)
            return
        behind = self.session.running is not None or bool(self.session.waiting())
        try:
            jobs, what = submit_form(self.session, request, count, axes)
        except EngineError as exc:
            self.say(str(exc), error=True)
            return
        if axes and not (behind or self.session.paused):
            self.say(f"{what}: the grid is saved when the last cell ends")
        if behind or self.session.paused:
            where = ordinal(self.session.position(jobs[0].id))
            paused = " — the queue is paused" if self.session.paused else ""
            self.say(f"queued {what}: {where} in the queue{paused} ({self._key('queue')} shows it)")
        self.kick()

    def kick(self) -> None:
        """Start the runner if there is work and none runs."""
        if self.session.wants_runner():
            self._run_session()

    def _begin_generation(self, painted: threading.Event) -> None:
        self.prompt_pane.steady_cursor(True)
        self.frames.start()
        self._frame_timer.resume()
        painted.set()

    def _others(self, job: Job) -> str:
        """Who queued `job`, when it was not this window: another window or command on the
        user's engine ("" for this window's own)."""
        return job.by if job.by and (self._linked is None or job.by != self._linked.label) else ""

    def action_cancel(self) -> None:
        running = self.session.running
        others = self._others(running) if running is not None else ""
        if running is not None and others and self._confirm != f"cancel {running.id}":
            self._confirm = f"cancel {running.id}"  # one key does not stop another shell's work unasked
            self.say(f"job {running.id} was queued by {others}: {self._key('cancel')} again cancels it")
            return
        self._confirm = None
        if running is not None and self.session.cancel(running.id):
            waiting = len(self.session.waiting())
            more = f"; {waiting} job(s) still wait ({self._key('queue')} to see them)" if waiting else ""
            self.say(f"cancelling… (stops within one step){more}")
        else:
            self.say("nothing to cancel: no generation is running")

    def action_next_task(self) -> None:
        names = [task.name for task in self.settings.tasks]
        self.request_switch(names[(names.index(self.chosen_task) + 1) % len(names)])

    def action_history(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
            return
        self.push_screen(
            HistoryScreen(self.settings.output_dir, self.session.made(), widget_class(self.drawing)), self._picked
        )

    def _picked(self, pick: Pick | None) -> None:
        if pick is None:
            return
        if pick.use == "init":
            self.prompt_pane.start_from(str(pick.path))
            strength = self.prompt_pane.query_one("#strength", Input).value or f"{DEFAULT_STRENGTH:g}"
            self.say(
                f"init image {pick.path.name} at strength {strength}; the size follows its shape "
                f"(type one to crop it): {self._key('generate')} starts from it"
            )
            return
        self._use_settings(pick.path)

    def _use_settings(self, path: Path) -> None:
        """Fill the prompt pane with the settings an image was made with (`u` in the history):
        its task (switched to), prompt, negative prompt, seed, steps, guidance, size, sampler,
        init image and strength."""
        try:
            request, notes = request_from_image(path, self.chosen_task)
        except OutputError as exc:
            self.say(str(exc), error=True)
            return
        if request.task not in [task.name for task in self.settings.tasks]:
            notes.append(f"its task {request.task!r} is not in config.toml: it runs as {self.chosen_task}")
            request = dataclasses.replace(request, task=self.chosen_task)
        if request.task != self.chosen_task:
            self.request_switch(request.task)  # fills the pane from the task first
        self.prompt_pane.fill_from_request(request)
        loaded = f"settings of {path.name} loaded ({request.task}): {self._key('generate')} makes it again"
        if self.session.busy or request.task != self.task_pane.active:
            self._switch_note = loaded  # said with the switch's own line, which comes later
        self.say(loaded)
        for note in notes:
            self.notify(markup_safe(note), severity="warning", timeout=10)

    def action_queue(self) -> None:
        if isinstance(self.screen, QueueScreen):
            self.pop_screen()
            return
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        self.push_screen(QueueScreen(self.session, self.kick, self._key("queue")))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key in KEYS:
            if key.command:
                help_text = f"{key.tooltip} ({self._key(key.action)})"
                yield SystemCommand(key.command, help_text, getattr(self, f"action_{key.action}"))
        for task in self.settings.tasks:
            yield SystemCommand(
                f"Task: {task.name}",
                task.description or "switch task mode",
                lambda name=task.name: self.request_switch(name),
            )

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self) -> None:
        self.action_generate()

    @on(TaskPane.TaskChosen)
    def _task_chosen(self, message: TaskPane.TaskChosen) -> None:
        self.request_switch(message.name)

    @on(TaskPane.TaskHighlighted)
    def _task_highlighted(self, message: TaskPane.TaskHighlighted) -> None:
        if self._model_ready and message.name != self.task_pane.active:
            self.engine.prefetch(message.name)  # returns at once; the reading runs in the engine

    # -- task switching -----------------------------------------------------------------------

    def request_switch(self, name: str) -> None:
        """Make `name` the task of new requests: its settings fill the prompt pane now; its
        adapters switch at once when nothing runs, else once the queue is done (queued jobs
        switch as each one needs)."""
        if not self._model_ready:
            self.say("the model is still loading; switch tasks once it is ready")
            return
        if name == self.chosen_task and name == self.task_pane.active:
            self.say(f"{name} is already the active task")
            return
        if name != self.chosen_task:
            self.prompt_pane.fill_from_task(self.settings.task(name))
        self._chosen = name
        self.session.request_switch(name)
        if self.session.busy:
            self.task_pane.set_pending(name if name != self.task_pane.active else None)
            self.say(f"task {name}: new requests use it; its adapters switch when the queue is done")
        self.kick()

    def on_session_news(self, message: SessionNews) -> None:
        """Each of the session's events, to what shows it."""
        event = message.event
        if isinstance(event, events.JobStarted):
            self._job_started(event, message.painted)
            return
        getattr(self, _SHOWS[type(event)])(event)

    def _task_switched(self, message: events.TaskSwitched) -> None:
        switch = message.switch
        text = switch.summary()
        if switch.model_switch is not None:
            self._show_model(switch.model_switch.model)
            if self.settings.task(switch.task).model is not None:
                self.task_pane.record_load(switch.task, switch.model_switch.duration_ms)
            self.preview_pane.model_ready(
                f"{switch.model_switch.model.name} ready: type a prompt, press Enter or {self._key('generate')}"
            )
            text = f"{switch.model_switch.summary()}; {text}"
            for note in switch.model_switch.notes:
                self.notify(markup_safe(note), severity="warning", timeout=10)
        self.task_pane.set_active(switch.task, text, switch.adapters, switch.warning)
        if switch.task == self._chosen or self._chosen is None:
            self.task_pane.set_pending(None)
        if switch.warning:
            self.say(f"task {switch.task}: {switch.warning}", error=True)
        elif self._model_ready and not message.job_id:
            loaded, self._switch_note = self._switch_note or "", None
            self.say(f"{loaded} · task {switch.task}: {text}" if loaded else f"task {switch.task}: {text}")

    def _task_switch_failed(self, message: events.TaskSwitchFailed) -> None:
        self.task_pane.set_pending(None)
        if not message.job_id:
            self._chosen = self.task_pane.active
        self.say(f"could not switch to {message.task}: {message.error}", error=True)

    # -- the queue's runner -------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="session")
    def _run_session(self) -> None:
        """Run the session's jobs (and task switches) until none is left; the session's events
        come to the UI as messages."""
        steps = StepThrottle(1.0 / self.settings.ui.preview_fps)
        try:
            while self.session.run_next(lambda event: self._post_event(event, steps)):
                pass
        except BaseException:
            self.session.release_runner()
            raise

    def _post_event(self, event: SessionEvent, steps: StepThrottle, wait: bool = True) -> None:
        """A session event as a message; `wait`: the runner's thread waits for a job's start to
        be painted (the engine's queue runs elsewhere: its link's thread never waits)."""
        if isinstance(event, events.JobStepped):
            paced = steps.offer(event)
            if paced is None:
                return
            event = paced
        message = SessionNews(event)
        self.post_message(message)
        if isinstance(event, events.JobStarted) and wait:
            # Denoising starts once the job's start is on screen: the repaint then does not
            # compete with torch for the CPU.
            message.painted.wait(PAINT_WAIT_S)

    def _job_started(self, message: events.JobStarted, painted: threading.Event) -> None:
        job = self.session.job(message.job_id)
        self._running_job = job.id
        self._peaks_task = job.task
        size = f"{message.width}x{message.height}"
        note = f"· the first image at {size} compiles the UNet first (once per size)" if message.compiles_first else ""
        self.preview_pane.started(message.steps, message.width or 512, message.height or 512, note)
        label = f" · {job.label}" if job.label else ""
        others = self._others(job)
        by = f" · queued by {others}" if others else ""
        waiting = len(self.session.waiting())
        more = f" · {waiting} waiting" if waiting else ""
        self.say(f"generating job {job.id} ({job.task}{label}{by})…{more} · {self._key('cancel')} cancels")
        self.call_after_refresh(self._begin_generation, painted)

    def _job_stepped(self, message: events.JobStepped) -> None:
        if message.job_id == self._running_job:
            self.frames.offer_step(message)

    def _draw_step(self, step: events.JobStepped) -> None:
        self.preview_pane.show_step(step.preview, step.rate)
        if isinstance(self.screen, QueueScreen):
            self.screen.show_progress(step.job_id)

    def _job_finished(self, message: events.JobFinished) -> None:
        result = message.result
        job = self.session.job(message.job_id)
        self._job_ended()
        self.prompt_pane.show_last_seed(result.params.seed)
        if result.cancelled:
            saved = "cancelled: nothing saved"
            self.say(f"job {job.id} {message.cancelled_words()}; nothing saved")
        elif message.path is not None:
            saved = f"saved {markup_safe(str(message.path))}"
            self.say(f"saved {message.path}" + self._queue_note())
        else:
            self.refresh_bindings()
            saved = f"[b]not saved[/] — the image is kept in memory: {self._key('save')} saves it again"
            self.say(f"could not save the image: {message.save_error}", error=True)
        for warning in result.warnings:
            self.notify(markup_safe(warning), severity="warning", timeout=8)
        pacer = self.frames.pacer  # (its counts stay until the next job starts)
        self.preview_pane.finished(result, saved, (pacer.drawn, pacer.drawn_per_s()))
        sheet = self._groups.add(job, result.image) if job.group and result.image is not None else None
        if sheet is not None:  # a batch's images so far, or a sweep's grid: the next job's previews take over
            self.preview_pane.show_sheet(sheet)

    def _queue_note(self) -> str:
        waiting = len(self.session.waiting())
        if not waiting:
            return ""
        return f" · {waiting} waiting" + (" (queue paused)" if self.session.paused else "")

    def _job_failed(self, message: events.JobFailed) -> None:
        self._job_ended()
        self.preview_pane.failed()
        prefix = "out of memory" if message.out_of_memory else "generation failed"
        self.say(f"{prefix} (job {message.job_id}, {message.task}): {message.error}", error=True)

    def _group_finished(self, message: events.GroupFinished) -> None:
        self._groups.drop(message.group)
        if message.path is not None:
            sheet = "grid" if message.group.startswith("sweep") else "contact sheet"
            self.say(f"{message.group} done: {sheet} {message.path}")
        else:
            self.say(f"{message.group} done: {message.error}")

    def _queue_changed(self, _event: events.QueueChanged) -> None:
        if isinstance(self.screen, QueueScreen):
            self.screen.refresh_jobs()
        if self._model_ready and isinstance(self.session, SessionMirror) and self.session.first_sight():
            self.say(self._engine_queue_note())
        error = self.session.store_error
        if error is not None and error != self._store_error_said:
            self._store_error_said = error
            self.notify(markup_safe(f"{error}: the queue runs, but would not survive a crash"), severity="warning")

    def _engine_queue_note(self) -> str:
        """On coming to the user's engine: what its queue holds, and what ended meanwhile."""
        summary = queue_summary(self.session)
        return f"your engine's queue: {summary} ({self._key('queue')} shows them)" if summary else ""

    def on_prompt_pane_controls_removed(self, message: PromptPane.ControlsRemoved) -> None:
        what = "negative prompt" if message.field == "negative" else "prompt"
        self.say(
            f"removed {message.count} control character(s) from the {what}: "
            "they could drive the terminal and mean nothing to the model"
        )

    # -- a queue left by a session that ended -----------------------------------------------

    def on_queue_found(self, message: QueueFound) -> None:
        self.push_screen(ResumeQueue(message.orphans), lambda choice: self._queue_choice(message.orphans, choice))

    def _queue_choice(self, orphans: list[Orphan], choice: str | None) -> None:
        line, problems = settle(self.session, orphans, choice)
        for problem in problems:
            self.notify(markup_safe(problem), severity="warning", timeout=10)
        if choice == RESUME:
            self.say(f"{line} ({self._key('queue')} shows them)")
            self.kick()
        else:
            self.say(line)

    # -- saving again -------------------------------------------------------------------------

    def action_save(self) -> None:
        unsaved = self.session.unsaved
        if not unsaved:
            self.say("nothing waits to be saved: every image of this session is on disk")
            return
        self.say(f"saving {len(unsaved)} image(s) again to {self.settings.output_dir}…")
        self._save_again()

    @work(thread=True, exclusive=True, exit_on_error=False, group="save")
    def _save_again(self) -> None:
        self.session.save_again(lambda event: self.post_message(SessionNews(event)))

    def _image_saved(self, message: events.ImageSaved) -> None:
        unsaved = len(self.session.unsaved)
        if message.path is None:
            self.say(
                f"still not saved: {message.error} ({unsaved} image(s) stay in memory; "
                f"{self._key('save')} tries again)",
                error=True,
            )
            return
        self.refresh_bindings()
        self.preview_pane.show_saved(f"saved {markup_safe(str(message.path))}")
        self.say(f"saved {message.path}" + (f" ({unsaved} still waiting)" if unsaved else ""))

    async def action_quit(self) -> None:
        """Quit; with images that could not be saved, the first quit only says so. Queued jobs
        are kept in the queue file and offered at the next start."""
        unsaved = len(self.session.unsaved)
        if unsaved and self._confirm != "quit":
            self._confirm = "quit"
            self.say(
                f"{unsaved} image(s) are not saved: {self._key('save')} saves them, "
                f"{self._key('quit')} again quits and loses them",
                error=True,
            )
            return
        self.exit()

    def _job_ended(self) -> None:
        self._frame_timer.pause()
        self.frames.stop()
        self.prompt_pane.steady_cursor(False)
        self._running_job = None

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place an unexpected worker crash becomes a message; the app keeps running."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        if event.worker.group == "session":
            self._job_ended()
            self.preview_pane.failed()
        elif event.worker.group == "load":
            self._model_ready = self.engine.model is not None
            self.refresh_bindings()
        self.say(f"unexpected error in {event.worker.group}: {text}", error=True)

    # -- hardware -----------------------------------------------------------------------------

    def _sample_hardware(self) -> None:
        """The telemetry's own thread samples (fast while the engine works, slowly at rest);
        each snapshot comes here as a message."""
        self._unwatch.append(self.telemetry.subscribe(lambda snap: self.post_message(HardwareSampled(snap))))
        self.telemetry.start()
        where = getattr(self.telemetry, "where", "")  # the engine's machine, when it is another
        if where:
            self.hardware_pane.border_title = f"Hardware · {where}"

    def on_unmount(self) -> None:  # the app is closing
        for unwatch in self._unwatch:
            unwatch()
        self.session.close()  # what waits stays in the queue file, offered at the next start
        self.telemetry.stop()

    def on_hardware_sampled(self, message: HardwareSampled) -> None:
        # Peaks are the telemetry's: it folds in every sample and stage, drawn or not.
        self.frames.offer_sample(message)

    def _show_sample(self, message: HardwareSampled) -> None:
        self.hardware_pane.show(message.snapshot)
        task = self._peaks_task
        by_task = self.telemetry.peaks_by_task()
        if by_task:
            self.hardware_pane.show_peaks(by_task, task, self.telemetry.peaks_by_stage(task) if task else {})
