"""The Spatiora terminal application.

Data flows one way: a key press makes a request, a worker thread calls the engine, the engine
calls back per step, the worker posts typed messages, the UI draws. Only cancel flows back.
The first frame is drawn before torch is imported: the model loads in a worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Input
from textual.worker import Worker, WorkerState, get_current_worker

from spatiora_tui.atomic import clean_stale_partials
from spatiora_tui.config import Settings, TaskSettings
from spatiora_tui.engine.api import (
    Engine,
    EngineError,
    EngineOOM,
    GenerationRequest,
    GenerationResult,
    StepPreview,
)
from spatiora_tui.hw import Telemetry, process_age_s
from spatiora_tui.outputs import OutputError, save_result
from spatiora_tui.ui.images import image_widget_class
from spatiora_tui.ui.messages import (
    AdapterSwitched,
    AdapterSwitchFailed,
    GenerationFailed,
    GenerationFinished,
    HardwareSampled,
    ImageSaved,
    ModelLoaded,
    ModelLoadFailed,
    ModelLoadProgressed,
    ModelSwitched,
    ModelSwitchFailed,
    StepPreviewReady,
)
from spatiora_tui.ui.pacing import PreviewPacer
from spatiora_tui.ui.screens.history import HistoryScreen
from spatiora_tui.ui.screens.models import ModelPicker
from spatiora_tui.ui.text import markup_safe
from spatiora_tui.ui.widgets.hardware_pane import HardwarePane
from spatiora_tui.ui.widgets.preview_pane import PreviewPane
from spatiora_tui.ui.widgets.prompt_pane import FormError, PromptPane
from spatiora_tui.ui.widgets.readout import Readout
from spatiora_tui.ui.widgets.task_pane import TaskPane

if TYPE_CHECKING:
    from PIL import Image

#: Longest a generation waits for the screen to show that it started.
PAINT_WAIT_S = 0.5

#: Binding ids, which are also the [keys] names in config.toml.
KEY_ACTIONS = ("generate", "cancel", "next_task", "history", "save", "models", "quit")


class SpatioraApp(App[None], inherit_bindings=False):
    CSS_PATH = "app.tcss"
    TITLE = "Spatiora"
    # Narrow terminals get a two-column layout (app.tcss): three columns would squeeze the preview out.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        # Not a priority binding: the key then reaches the focused field's queue behind the
        # characters typed before it, so a fast typist (or an SSH burst) generates with all of them.
        Binding("ctrl+g", "generate", "Generate", id="generate", tooltip="Generate with the prompt pane's settings"),
        Binding("escape", "cancel", "Cancel", id="cancel", tooltip="Cancel the running generation"),
        Binding(
            "ctrl+t", "next_task", "Next task", id="next_task", priority=True, tooltip="Switch to the next task mode"
        ),
        Binding("ctrl+o", "history", "History", id="history", priority=True, tooltip="Browse the images"),
        Binding(
            "ctrl+s",
            "save",
            "Save again",
            id="save",
            priority=True,
            tooltip="Save the last image again (shown when its save failed)",
        ),
        Binding(
            "ctrl+l",
            "models",
            "Model",
            id="models",
            priority=True,
            tooltip="Pick the base model from the checkpoints in your folders",
        ),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True, tooltip="Quit Spatiora"),
        Binding("ctrl+c", "help_quit", show=False, system=True),
    ]

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        renderer: str | None = None,
        telemetry: Telemetry | None = None,
        exit_after_first_frame: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.renderer = renderer or settings.ui.renderer
        self._image_class: type[Widget] = image_widget_class(self.renderer)
        # Shared with the engine, which marks its stages on it; its thread samples the hardware.
        self.telemetry = telemetry or Telemetry.from_settings(settings)
        self._tasks: dict[str, TaskSettings] = {t.name: t for t in settings.tasks}
        self._model_ready = False
        self._generation: Worker[Any] | None = None
        self._pending_task: str | None = None
        self._switching = False
        self._model_switching = False
        self._peaks_task: str | None = None  # the task whose stage peaks the pane shows
        self.preview_pacer = PreviewPacer(settings.ui.preview_fps, settings.ui.preview_cpu_budget)
        # While generating, the newest step and hardware sample wait here for the frame clock.
        self._pending_step: StepPreviewReady | None = None
        self._pending_sample: HardwareSampled | None = None
        # The newest step image the budget has not let through yet: drawn on a later frame unless
        # a newer one replaces it (with slow steps every image gets drawn, however tight the budget).
        self._pending_image: Image.Image | None = None
        self._session_images: list[Path] = []
        # Images whose save failed, oldest first: kept in memory until a "save again" succeeds.
        self._unsaved: list[GenerationResult] = []
        self._quit_asked = False  # a first quit with unsaved images only warns
        self._exit_after_first_frame = exit_after_first_frame
        self._unsubscribe: Callable[[], None] | None = None
        #: Seconds from process start to the first frame (set when it is drawn).
        self.first_frame_age_s: float | None = None
        self.set_keymap({action: getattr(settings.keys, action) for action in KEY_ACTIONS})

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: messages may arrive while another screen (history) is on top.
        samples = max(1, round(self.settings.ui.sparkline_minutes * 60 * self.settings.ui.hardware_hz))
        self.task_pane = TaskPane(self.settings.tasks, id="tasks")
        self.prompt_pane = PromptPane(id="prompt-pane")
        self.preview_pane = PreviewPane(self._image_class, id="preview")
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
        self._frame_clock = self.set_interval(1.0 / self.settings.ui.preview_fps, self._draw_frame, pause=True)
        if self._exit_after_first_frame:
            return
        self._load_model()
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

    # -- model loading ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _load_model(self) -> None:
        # Temp files a killed writer left (atomic writes leave nothing else); off the UI thread,
        # after the first frame, as a big output folder takes a while to list.
        clean_stale_partials(self.settings.output_dir)
        try:
            model = self.engine.load(
                on_progress=lambda text: self.post_message(ModelLoadProgressed(text)),
                source=self.settings.tasks[0].model,
            )
            switch = self.engine.switch_task(self.settings.tasks[0].name)
        except EngineError as exc:
            self.post_message(ModelLoadFailed(str(exc)))
            return
        self.post_message(AdapterSwitched(switch))
        self.post_message(ModelLoaded(model))

    def on_model_load_progressed(self, message: ModelLoadProgressed) -> None:
        self.preview_pane.show_loading(f"{message.text}…")
        self.say(f"{message.text}…")

    def on_model_loaded(self, message: ModelLoaded) -> None:
        model = message.model
        self._model_ready = True
        self._show_model(model)
        note = (
            (" — images look like noise, every mechanism is real; set model.source for a real model (docs/models.md)")
            if model.random_weights
            else ""
        )
        self.preview_pane.model_ready(f"ready: type a prompt, press Enter or {self._key('generate')}")
        self.say(f"model ready: {model.name}{note}")
        self.refresh_bindings()

    def _show_model(self, model: Any) -> None:
        self.sub_title = f"{model.name} · {model.variant or model.family_label} · {model.device} {model.dtype}"
        self.task_pane.set_model(model.name)
        self.preview_pane.set_method(model.preview)

    # -- the base model -----------------------------------------------------------------------

    def action_models(self) -> None:
        if not self._model_ready:
            self.say("the model is still loading; pick another one once it is ready")
            return
        if self._generation is not None or self._switching:
            self.say("a generation or task switch is running; pick a model when it ends")
            return
        self.push_screen(ModelPicker(self.engine), self._model_chosen)

    def _model_chosen(self, source: str | None) -> None:
        if source is None:
            return
        self._model_ready = False
        self._model_switching = True
        self.refresh_bindings()
        self.preview_pane.show_loading(f"loading {Path(source).name}…")
        self.say(f"loading {Path(source).name} in the background (the current model is freed first)…")
        self._switch_model(source, self.task_pane.active)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _switch_model(self, source: str, task: str | None) -> None:
        progress = lambda text: self.post_message(ModelLoadProgressed(text))  # noqa: E731
        try:
            switch = self.engine.switch_model(source, on_progress=progress)
        except EngineError as exc:
            self.post_message(ModelSwitchFailed(str(exc), self.engine.model))
            return
        self.post_message(ModelSwitched(switch))
        if task is not None:
            try:  # the task's adapters again, on the new model; reported with the model's load
                task_switch = self.engine.switch_task(task)
            except EngineError as exc:
                self.post_message(AdapterSwitchFailed(task, str(exc)))
                return
            self.post_message(AdapterSwitched(dataclasses.replace(task_switch, model_switch=switch)))

    def on_model_switched(self, message: ModelSwitched) -> None:
        switch = message.switch
        self._model_ready = True
        self._model_switching = False
        self.refresh_bindings()
        self._show_model(switch.model)
        self.say(switch.summary())  # the task switch that follows adds its own part

    def on_model_switch_failed(self, message: ModelSwitchFailed) -> None:
        self._model_switching = False
        self._model_ready = message.model is not None
        self.refresh_bindings()
        if message.model is not None:
            self._show_model(message.model)
            self.preview_pane.model_ready(f"{message.model.name} is still loaded")
        self.say(f"could not load the model: {message.error}", error=True)

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self.sub_title = "model failed to load"
        self.preview_pane.model_ready("the model failed to load; see the status line")
        self.say(f"model failed to load: {message.error}. Fix config.toml and restart.", error=True)

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Only the model's readiness dims a key. Dimming cancel between generations would rebuild
        # the footer as each one starts, on the UI thread, while denoising wants the CPU.
        if action == "generate" and not self._model_ready:
            return None  # shown dimmed until the model is ready
        if action == "save":
            return bool(self._unsaved)  # in the footer only while an image waits
        return True

    def _key(self, action: str) -> str:
        return str(getattr(self.settings.keys, action)).split(",")[0]

    def action_generate(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        if not self._model_ready:
            self.say("the model is still loading; generate is available once it is ready")
            return
        if self._generation is not None:
            self.say(f"a generation is already running; {self._key('cancel')} cancels it")
            return
        task = self.task_pane.active or self.settings.tasks[0].name
        try:
            request = self.prompt_pane.request(task)
        except FormError as exc:
            self.say(str(exc), error=True)
            return
        self._peaks_task = task
        settings = self._tasks[task]
        self.preview_pane.started(
            request.steps or settings.steps, request.width or settings.width, request.height or settings.height
        )
        self.say(f"generating ({task})… {self._key('cancel')} cancels")
        # The worker starts denoising once this state is on screen: the repaint then does not
        # compete with torch for the CPU.
        painted = threading.Event()
        self._generation = self._generate(request, painted)
        self.call_after_refresh(self._begin_generation, painted)

    def _begin_generation(self, painted: threading.Event) -> None:
        self.prompt_pane.steady_cursor(True)
        self.preview_pacer.start()
        self._frame_clock.resume()
        painted.set()

    def action_cancel(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
            self.say("cancelling… (stops within one step)")
        else:
            self.say("nothing to cancel: no generation is running")

    def action_next_task(self) -> None:
        names = list(self._tasks)
        current = self._pending_task or self.task_pane.active or names[0]
        self.request_switch(names[(names.index(current) + 1) % len(names)])

    def action_history(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
            return
        self.push_screen(HistoryScreen(self.settings.output_dir, set(self._session_images), self._image_class))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Generate", f"Generate an image ({self._key('generate')})", self.action_generate)
        yield SystemCommand(
            "Cancel generation", f"Stop the running generation ({self._key('cancel')})", self.action_cancel
        )
        yield SystemCommand("Next task mode", f"Switch task ({self._key('next_task')})", self.action_next_task)
        yield SystemCommand("History", f"Browse images ({self._key('history')})", self.action_history)
        yield SystemCommand("Model", f"Pick the base model ({self._key('models')})", self.action_models)
        for name in self._tasks:
            yield SystemCommand(
                f"Task: {name}",
                self._tasks[name].description or "switch task mode",
                lambda name=name: self.request_switch(name),
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
        """Switch to task `name` now, or queue it until the running generation ends."""
        if not self._model_ready:
            self.say("the model is still loading; switch tasks once it is ready")
            return
        if self._generation is not None or self._switching:
            self._pending_task = name
            self.task_pane.set_pending(name)
            self.engine.prefetch(name)  # its adapters come to RAM while the generation runs
            self.say(f"switch to {name} queued: it happens when the running generation ends")
            return
        if name == self.task_pane.active:
            self.say(f"{name} is already the active task")
            return
        self._switching = True
        self._switch(name)

    @work(thread=True, exit_on_error=False, group="switch")
    def _switch(self, name: str) -> None:
        progress = lambda text: self.post_message(ModelLoadProgressed(text))  # noqa: E731 - a task's own model
        try:
            self.post_message(AdapterSwitched(self.engine.switch_task(name, on_progress=progress)))
        except EngineError as exc:
            self.post_message(AdapterSwitchFailed(name, str(exc)))

    def on_adapter_switched(self, message: AdapterSwitched) -> None:
        switch = message.switch
        self._switching = False
        text = switch.summary()
        if switch.model_switch is not None:
            self._show_model(switch.model_switch.model)
            if self._tasks[switch.task].model is not None:
                self.task_pane.record_load(switch.task, switch.model_switch.duration_ms)
            self.preview_pane.model_ready(
                f"{switch.model_switch.model.name} ready: type a prompt, press Enter or {self._key('generate')}"
            )
            text = f"{switch.model_switch.summary()}; {text}"
            for note in switch.model_switch.notes:
                self.notify(markup_safe(note), severity="warning", timeout=10)
        self.task_pane.set_active(switch.task, text, switch.adapters, switch.warning)
        self.prompt_pane.fill_from_task(self._tasks[switch.task])
        if switch.warning:
            self.say(f"task {switch.task}: {switch.warning}", error=True)
        elif self._model_ready:
            self.say(f"task {switch.task}: {text}")
        self._run_pending_switch()

    def on_adapter_switch_failed(self, message: AdapterSwitchFailed) -> None:
        self._switching = False
        self.task_pane.set_pending(None)
        self.say(f"could not switch to {message.task}: {message.error}", error=True)
        self._run_pending_switch()

    def _run_pending_switch(self) -> None:
        pending, self._pending_task = self._pending_task, None
        if pending is not None and pending != self.task_pane.active:
            self.request_switch(pending)
        else:
            self.task_pane.set_pending(None)

    # -- generation ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def _generate(self, request: GenerationRequest, painted: threading.Event) -> None:
        worker = get_current_worker()
        painted.wait(PAINT_WAIT_S)
        period = 1.0 / self.settings.ui.preview_fps
        last_post = [float("-inf")]
        newest: list[Any] = [None]  # the newest preview image not yet posted

        def on_step(preview: StepPreview) -> None:
            if preview.image is not None:
                newest[0] = preview.image
            now = time.monotonic()
            if preview.step >= preview.total or now - last_post[0] >= period:
                last_post[0] = now
                rate = preview.step / max(preview.elapsed_s, 1e-6)
                image, newest[0] = newest[0], None
                if image is not None and image.mode != "RGB":
                    image = image.convert("RGB")
                self.post_message(
                    StepPreviewReady(StepPreview(preview.step, preview.total, image, preview.elapsed_s), rate)
                )

        try:
            result = self.engine.generate(request, on_step=on_step, cancel=worker.cancelled_event)
        except EngineOOM as exc:
            self.post_message(GenerationFailed(request.task, str(exc), out_of_memory=True))
            return
        except EngineError as exc:
            self.post_message(GenerationFailed(request.task, str(exc), out_of_memory=False))
            return
        path = error = None
        if result.image is not None and not result.cancelled:
            path, error = self._save(result)
        self.post_message(GenerationFinished(result, path, error))

    def _save(self, result: GenerationResult) -> tuple[Path | None, str | None]:
        """Save one image (on a worker thread): (its path, None) or (None, what went wrong)."""
        try:
            with self.telemetry.stage("save"):
                return save_result(result, self.settings.output_dir), None
        except OutputError as exc:
            return None, str(exc)

    def on_step_preview_ready(self, message: StepPreviewReady) -> None:
        if self._generation is not None:
            self._pending_step = message

    def _draw_frame(self) -> None:
        """One repaint of everything that changed while generating, `preview_fps` times a second.

        Each repaint has a fixed cost on the UI thread, so progress, the newest preview (when the
        pacer's CPU budget allows) and the hardware figures share one, instead of one each."""
        step = self._pending_step
        if not self.preview_pacer.may_repaint(image_waiting=step is not None and step.preview.image is not None):
            return  # over the CPU budget: what is pending waits for a later tick
        self._pending_step = None
        sample, self._pending_sample = self._pending_sample, None
        if self._generation is not None:
            if step is not None:
                if step.preview.image is not None:
                    self._pending_image = step.preview.image
                self.preview_pane.show_step(step.preview, step.rate)
            if self._pending_image is not None and self.preview_pacer.should_draw():
                self.preview_pane.show_image(self._pending_image)
                self._pending_image = None
        if sample is not None:
            self._show_sample(sample)

    def on_generation_finished(self, message: GenerationFinished) -> None:
        result = message.result
        self._generation_ended()
        self.prompt_pane.show_last_seed(result.params.seed)
        if result.cancelled:
            saved = "cancelled: nothing saved"
            self.say(f"cancelled after {result.steps_done} steps; nothing saved")
        elif message.path is not None:
            self._session_images.append(message.path)
            saved = f"saved {markup_safe(str(message.path))}"
            self.say(f"saved {message.path}")
        else:
            self._unsaved.append(result)
            self.refresh_bindings()
            saved = f"[b]not saved[/] — the image is kept in memory: {self._key('save')} saves it again"
            self.say(f"could not save the image: {message.save_error}", error=True)
        for warning in result.warnings:
            self.notify(markup_safe(warning), severity="warning", timeout=8)
        self.preview_pane.finished(result, saved)

    def on_prompt_pane_controls_removed(self, message: PromptPane.ControlsRemoved) -> None:
        what = "negative prompt" if message.field == "negative" else "prompt"
        self.say(
            f"removed {message.count} control character(s) from the {what}: "
            "they could drive the terminal and mean nothing to the model"
        )

    # -- saving again -------------------------------------------------------------------------

    def action_save(self) -> None:
        if not self._unsaved:
            self.say("nothing waits to be saved: every image of this session is on disk")
            return
        self.say(f"saving {len(self._unsaved)} image(s) again to {self.settings.output_dir}…")
        self._save_again(list(self._unsaved))

    @work(thread=True, exclusive=True, exit_on_error=False, group="save")
    def _save_again(self, results: list[GenerationResult]) -> None:
        for result in results:
            path, error = self._save(result)
            self.post_message(ImageSaved(result, path, error))
            if error is not None:
                return  # the same cause would fail the rest too

    def on_image_saved(self, message: ImageSaved) -> None:
        if message.path is None:
            self.say(
                f"still not saved: {message.error} ({len(self._unsaved)} image(s) stay in memory; "
                f"{self._key('save')} tries again)",
                error=True,
            )
            return
        if message.result in self._unsaved:
            self._unsaved.remove(message.result)
            self.refresh_bindings()
        self._session_images.append(message.path)
        self.preview_pane.show_saved(f"saved {markup_safe(str(message.path))}")
        self.say(f"saved {message.path}" + (f" ({len(self._unsaved)} still waiting)" if self._unsaved else ""))

    async def action_quit(self) -> None:
        """Quit; with images that could not be saved, the first quit only says so."""
        if self._unsaved and not self._quit_asked:
            self._quit_asked = True
            self.say(
                f"{len(self._unsaved)} image(s) are not saved: {self._key('save')} saves them, "
                f"{self._key('quit')} again quits and loses them",
                error=True,
            )
            return
        self.exit()

    def on_generation_failed(self, message: GenerationFailed) -> None:
        self._generation_ended()
        self.preview_pane.failed()
        prefix = "out of memory" if message.out_of_memory else "generation failed"
        self.say(f"{prefix}: {message.error}", error=True)

    def _generation_ended(self) -> None:
        self._frame_clock.pause()
        self._pending_step = self._pending_image = None
        sample, self._pending_sample = self._pending_sample, None
        if sample is not None:
            self._show_sample(sample)
        self.prompt_pane.steady_cursor(False)
        self._generation = None
        self._run_pending_switch()

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place an unexpected worker crash becomes a message; the app keeps running."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        if event.worker.group == "generate":
            self._generation_ended()
            self.preview_pane.failed()
        elif event.worker.group == "switch":
            self._switching = False
        elif event.worker.group == "load" and self._model_switching:
            self._model_switching = False
            self._model_ready = self.engine.model is not None
        self.say(f"unexpected error in {event.worker.group}: {text}", error=True)

    # -- hardware -----------------------------------------------------------------------------

    def _sample_hardware(self) -> None:
        """The telemetry's own thread samples (fast while the engine works, slowly at rest);
        each snapshot comes here as a message."""
        self._unsubscribe = self.telemetry.subscribe(lambda snap: self.post_message(HardwareSampled(snap)))
        self.telemetry.start()

    def on_unmount(self) -> None:  # the app is closing
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.telemetry.stop()

    def on_hardware_sampled(self, message: HardwareSampled) -> None:
        # Peaks are the telemetry's: it folds in every sample and stage, drawn or not.
        if self._generation is not None:
            self._pending_sample = message  # drawn by the frame clock
        else:
            self._show_sample(message)

    def _show_sample(self, message: HardwareSampled) -> None:
        self.hardware_pane.show(message.snapshot)
        task = self._peaks_task
        by_task = self.telemetry.peaks_by_task()
        if by_task:
            self.hardware_pane.show_peaks(by_task, task, self.telemetry.peaks_by_stage(task) if task else {})
