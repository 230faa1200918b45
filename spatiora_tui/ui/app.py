"""The Spatiora terminal application.

Data flows one way: a key press makes a request, a worker thread calls the engine, the engine
calls back per step, the worker posts typed messages, the UI draws. Only cancel flows back.
The first frame is drawn before torch is imported: the model loads in a worker.

The App holds the panes and the keys; RequestView takes the prompt form's requests to the
Session (and an image's settings back to the form); four views draw what the Session and the
engine say: JobView (the running job), ModelView (the base model), TaskView (task switches) and
LinkView (an engine in another process: its link, its words, a restart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input
from textual.worker import Worker, WorkerState

from spatiora_tui.config import Settings, user_state_dir
from spatiora_tui.engine.api import Engine, ModelInfo
from spatiora_tui.hw import HardwareFeed, Telemetry, process_age_s
from spatiora_tui.jobs import events
from spatiora_tui.jobs.events import SessionEvent
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import Orphan, QueueStore
from spatiora_tui.jobs.view import Queue, queue_summary
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.ui.images import choose_drawing, describe, widget_class
from spatiora_tui.ui.job_view import JobView
from spatiora_tui.ui.keys import KEY_ACTIONS, KEYS, bindings
from spatiora_tui.ui.link_view import LinkView
from spatiora_tui.ui.messages import (
    EngineLinkChanged,
    EngineRestarted,
    EngineSaid,
    HardwareSampled,
    QueueFound,
    SessionNews,
)
from spatiora_tui.ui.model_view import ModelView
from spatiora_tui.ui.pacing import FrameClock, PreviewPacer, StepThrottle
from spatiora_tui.ui.request_view import RequestView
from spatiora_tui.ui.screens.history import HistoryScreen
from spatiora_tui.ui.screens.models import ModelPicker
from spatiora_tui.ui.screens.queue import QueueScreen
from spatiora_tui.ui.screens.resume import RESUME, ResumeQueue, settle
from spatiora_tui.ui.task_view import TaskView
from spatiora_tui.ui.text import markup_safe
from spatiora_tui.ui.widgets.hardware_pane import HardwarePane
from spatiora_tui.ui.widgets.preview_pane import PreviewPane
from spatiora_tui.ui.widgets.prompt_pane import PromptPane
from spatiora_tui.ui.widgets.readout import Readout
from spatiora_tui.ui.widgets.task_pane import TaskPane

#: What shows each of the session's events that are not a job's, the model's or a task switch's
#: (JobView, ModelView and TaskView show those).
_SHOWS: dict[type, str] = {
    events.QueueChanged: "_queue_changed",
    events.ImageSaved: "_image_saved",
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
        self.drawing = choose_drawing(renderer or settings.ui.renderer)  # how images are drawn here, and why
        # Shared with the engine, which marks its stages on it; its thread samples the hardware.
        self.telemetry: HardwareFeed = telemetry or Telemetry.from_settings(settings)
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
        self._store_error_said: str | None = None
        self.link = LinkView(self, engine) if isinstance(engine, RemoteEngine) else None
        self.jobs = JobView(self)
        self.models = ModelView(self)
        self.tasks = TaskView(self)
        self.requests = RequestView(self, self.tasks)
        # While generating, the newest step, image and hardware sample wait for the next frame.
        self.frames = FrameClock(
            PreviewPacer(settings.ui.preview_fps, self.models.budget("cpu")),
            draw_step=self.jobs.draw_step,
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
        self.frame_timer = self.set_interval(1.0 / self.settings.ui.preview_fps, self.frames.tick, pause=True)
        if self._exit_after_first_frame:
            return
        if self.link is not None:
            self._unwatch += self.link.watch()
        self.load_model()
        self._sample_hardware()

    def _first_frame(self) -> None:
        self.first_frame_age_s = process_age_s()
        if self._exit_after_first_frame:
            self.exit()

    @property
    def model_ready(self) -> bool:
        """True once the base model is loaded and the first task is active."""
        return self.models.ready

    # -- status line --------------------------------------------------------------------------

    def say(self, text: str, error: bool = False) -> None:
        status = self.status_line
        status.set_class(error, "error")
        status.show(markup_safe(text))

    # -- the base model -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load_model(self, source: str | None = None, task: str | None = None) -> None:
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
        if not self.model_ready:
            self.say("the model is still loading; pick another one once it is ready")
            return
        if self.session.busy or self.session.waiting():
            self.say(f"jobs are running or waiting; pick a model when the queue is done ({self.key('queue')})")
            return
        self.push_screen(ModelPicker(self.engine), self.models.chosen)

    # -- the engine's process (ui/link_view.py) -----------------------------------------------

    @property
    def linked(self) -> RemoteEngine | None:
        """An engine in another process (the user's own, or another machine's): its link may drop."""
        return self.link.engine if self.link is not None else None

    def on_engine_link_changed(self, message: EngineLinkChanged) -> None:
        if self.link is not None:
            self.link.changed(message.why)

    def on_engine_said(self, message: EngineSaid) -> None:
        self.say(message.text)

    def action_restart_engine(self) -> None:
        if self.link is None:
            self.say("the engine is running: nothing to restart")
            return
        self.link.restart()

    @property
    def restarting(self) -> bool:
        return any(worker.group == "restart" and worker.is_running for worker in self.workers)

    @work(thread=True, exclusive=True, exit_on_error=False, group="restart")
    def restart_engine(self, task: str | None) -> None:
        if self.link is not None:
            self.link.run_restart(task)

    def show_model(self, model: ModelInfo) -> None:
        self.models.show_model(model)

    def on_engine_restarted(self, message: EngineRestarted) -> None:
        if self.link is not None:
            self.link.restarted(message)

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Only the model's readiness dims a key. Dimming cancel between generations would rebuild
        # the footer as each one starts, on the UI thread, while denoising wants the CPU.
        if action == "generate" and not self.model_ready:
            return None  # shown dimmed until the model is ready
        if action == "save":
            return bool(self.session.unsaved)  # in the footer only while an image waits
        if action == "restart_engine":
            # In the footer only while the engine is down (the link's own state, not a copy).
            return self.linked is not None and self.linked.down is not None
        return True

    def key(self, action: str) -> str:
        """The first key bound to `action`, as the user's keymap says."""
        return str(getattr(self.settings.keys, action)).split(",")[0]

    @property
    def chosen_task(self) -> str:
        """The task new requests are for (TaskView.current)."""
        return self.tasks.current

    def action_generate(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        self.requests.generate()

    def kick(self) -> None:
        """Start the runner if there is work and none runs."""
        if self.session.wants_runner():
            self._run_session()

    def action_cancel(self) -> None:
        running = self.session.running
        others = self.jobs.others(running) if running is not None else ""
        if running is not None and others and self._confirm != f"cancel {running.id}":
            self._confirm = f"cancel {running.id}"  # one key does not stop another shell's work unasked
            self.say(f"job {running.id} was queued by {others}: {self.key('cancel')} again cancels it")
            return
        self._confirm = None
        if running is not None and self.session.cancel(running.id):
            waiting = len(self.session.waiting())
            more = f"; {waiting} job(s) still wait ({self.key('queue')} to see them)" if waiting else ""
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
            HistoryScreen(self.settings.output_dir, self.session.made(), widget_class(self.drawing)),
            self.requests.picked,
        )

    def action_queue(self) -> None:
        if isinstance(self.screen, QueueScreen):
            self.pop_screen()
            return
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        self.push_screen(QueueScreen(self.session, self.kick, self.key("queue")))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key in KEYS:
            if key.command:
                help_text = f"{key.tooltip} ({self.key(key.action)})"
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
        if self.model_ready and message.name != self.task_pane.active:
            self.engine.prefetch(message.name)  # returns at once; the reading runs in the engine

    # -- task switching (ui/task_view.py) --------------------------------------------------

    def request_switch(self, name: str) -> None:
        """Make `name` the task of new requests (TaskView.request)."""
        self.tasks.request(name)

    def on_session_news(self, message: SessionNews) -> None:
        """Each of the session's events, to what shows it."""
        event = message.event
        if not (self.jobs.show(event, message.painted) or self.models.show(event) or self.tasks.show(event)):
            getattr(self, _SHOWS[type(event)])(event)

    # -- the queue's runner -------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="session")
    def _run_session(self) -> None:
        """Run the session's jobs (and task switches) until none is left; the session's events
        come to the UI as messages."""
        steps = StepThrottle(1.0 / self.settings.ui.preview_fps)
        try:
            while self.session.run_next(lambda event: self.post_event(event, steps)):
                pass
        except BaseException:
            self.session.release_runner()
            raise

    def post_event(self, event: SessionEvent, steps: StepThrottle, wait: bool = True) -> None:
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

    def _queue_changed(self, _event: events.QueueChanged) -> None:
        if isinstance(self.screen, QueueScreen):
            self.screen.refresh_jobs()
        if self.model_ready and isinstance(self.session, SessionMirror) and self.session.first_sight():
            self.say(self.engine_queue_note())
        error = self.session.store_error
        if error is not None and error != self._store_error_said:
            self._store_error_said = error
            self.notify(markup_safe(f"{error}: the queue runs, but would not survive a crash"), severity="warning")

    def engine_queue_note(self) -> str:
        """On coming to the user's engine: what its queue holds, and what ended meanwhile."""
        summary = queue_summary(self.session)
        return f"your engine's queue: {summary} ({self.key('queue')} shows them)" if summary else ""

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
            self.say(f"{line} ({self.key('queue')} shows them)")
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
                f"still not saved: {message.error} ({unsaved} image(s) stay in memory; {self.key('save')} tries again)",
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
                f"{unsaved} image(s) are not saved: {self.key('save')} saves them, "
                f"{self.key('quit')} again quits and loses them",
                error=True,
            )
            return
        self.exit()

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place an unexpected worker crash becomes a message; the app keeps running."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        if event.worker.group == "session":
            self.jobs.ended()
            self.preview_pane.failed()
        elif event.worker.group == "load":
            self.models.set_ready(self.engine.model is not None)
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
        task = self.jobs.task
        by_task = self.telemetry.peaks_by_task()
        if by_task:
            self.hardware_pane.show_peaks(by_task, task, self.telemetry.peaks_by_stage(task) if task else {})
