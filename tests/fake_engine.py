"""A fake engine that follows the Engine protocol exactly, so session and UI tests run fast and
deterministically; tests/engine_contract.py holds it to the same contract as LocalEngine.

A `gate` lets a test hold a generation in the middle (to press keys while it runs) without any
sleep; the image depends on the seed, the prompt, the guidance and the scheduler, as a real one does.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
import zlib
from dataclasses import dataclass, field

from PIL import Image

from spatiora_tui.config import SEED_RANGE, ConfigError, Settings, TaskSettings
from spatiora_tui.engine.api import (
    AdapterSwitch,
    AdapterUse,
    EngineError,
    EngineOOM,
    GenerationRequest,
    GenerationResult,
    MemoryPeaks,
    ModelChoice,
    ModelInfo,
    ModelSwitch,
    ResolvedRequest,
    StepCallback,
    StepPreview,
    Timings,
)
from spatiora_tui.engine.init_image import InitImage, init_for, init_notices, steps_run, strength_of
from spatiora_tui.engine.requests import task_for
from spatiora_tui.hw import Telemetry
from spatiora_tui.notices import Notice, NoticeKind

MODEL = ModelInfo(
    name="fake-model", source="fake", kind="demo", family="sd1", device="cpu", dtype="fp32", preview="latent2rgb"
)


@dataclass
class FakeEngine:
    settings: Settings
    fail_load: str | None = None
    fail_generate: EngineError | None = None
    gate: threading.Event | None = None  # when set, step `gate_step` waits on it
    gate_step: int = 2
    compiled: str = ""  # the model's torch.compile mode, as LocalEngine reports it ("" = eager)
    device: str = "cpu"  # where the model "computes"
    at_gate: threading.Event = field(default_factory=threading.Event)
    switches: list[str] = field(default_factory=list)
    requests: list[GenerationRequest] = field(default_factory=list)
    previews: bool = True  # False: steps report progress without images ([preview] method = "none")
    switch_warning: str | None = None  # a leak watchdog warning every switch reports
    prefetched: list[str] = field(default_factory=list)
    telemetry: Telemetry | None = None  # the app's: stages are marked on it as the real engine does
    choices: tuple[ModelChoice, ...] = ()  # what the model picker lists
    fail_model_switch: str | None = None
    model_switches: list[str] = field(default_factory=list)
    oom_at_step: int | None = None  # the device "runs out of memory" at this step
    _active: str | None = None
    _model: ModelInfo | None = None

    @property
    def tasks(self) -> tuple[TaskSettings, ...]:
        return self.settings.tasks

    @property
    def active_task(self) -> str | None:
        return self._active

    def load(self, on_progress=None, source=None) -> ModelInfo:
        if on_progress:
            on_progress("loading fake-model")
        if self.fail_load:
            raise EngineError(self.fail_load)
        self._model = dataclasses.replace(MODEL, compiled=self.compiled, device=self.device)
        return self._model

    @property
    def model(self) -> ModelInfo | None:
        return self._model

    def models(self) -> tuple[ModelChoice, ...]:
        return self.choices

    def switch_model(self, source: str, on_progress=None) -> ModelSwitch:
        if on_progress:
            on_progress(f"loading {source}")
        if self.fail_model_switch:
            raise EngineError(self.fail_model_switch)
        self.model_switches.append(source)
        previous = self._model
        name = source.rsplit("/", 1)[-1].removesuffix(".safetensors")
        self._model = ModelInfo(
            name=name, source=source, kind="single_file", family="sd1", device="cpu", dtype="fp32", variant="SD 1.x"
        )
        self._active = None
        return ModelSwitch(
            self._model,
            previous.source if previous else None,
            1500.0,
            notes=("task 'interior': adapter 'interior' is for SDXL, the base model is now SD 1.x",),
        )

    def _task(self, name: str) -> TaskSettings:
        try:
            return self.settings.task(name)
        except ConfigError as exc:
            raise EngineError(str(exc)) from None

    def switch_task(self, name: str, on_progress=None) -> AdapterSwitch:
        task = self._task(name)
        model_switch = None
        if task.model is not None and self._model is not None and task.model != self._model.name:
            model_switch = self.switch_model(task.model, on_progress)
        self.switches.append(name)
        self._active = name
        return AdapterSwitch(
            task=name,
            adapters=tuple((a.name, 1.0 if a.weight is None else a.weight) for a in task.adapters),
            duration_ms=6.0,
            warning=Notice(NoticeKind.MEMORY_LEAK, self.switch_warning) if self.switch_warning else None,
            model_switch=model_switch,
        )

    def prefetch(self, task: str) -> None:
        self.prefetched.append(task)

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> GenerationResult:
        self.requests.append(request)
        if self.fail_generate is not None:
            raise self.fail_generate
        if self._model is None:
            raise EngineError("the model is not loaded yet; call load() first")
        task = task_for(self.settings, request)
        init = init_for(request, task)
        low, high = SEED_RANGE
        if request.seed is not None and not low <= request.seed <= high:
            raise EngineError(f"seed must be between {low} and {high}, got {request.seed}")
        if self._active != task.name:
            self.switch_task(task.name)
        if self.telemetry is not None:
            self.telemetry.set_task(task.name)
            self.telemetry.enter("denoise")
        try:
            return self._run(request, task, on_step, cancel, init)
        finally:
            if self.telemetry is not None:
                self.telemetry.close_to(0)

    def _run(self, request, task, on_step, cancel, init: InitImage | None = None) -> GenerationResult:
        width, height = (task.width, task.height) if init is None else init.size
        strength = None if init is None else strength_of(request)
        steps = steps_run(task.steps, strength)  # image-to-image runs int(steps x strength)
        seed = request.seed if request.seed is not None else 1234
        done = 0
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                break
            if step == self.gate_step and self.gate is not None:
                self.at_gate.set()
                self.gate.wait(10)
            if step == self.oom_at_step:
                raise EngineOOM(f"out of memory at step {step} (fake); memory has been released")
            done = step
            if on_step:
                shade = int(255 * step / steps)
                preview = Image.new("RGB", (width // 8, height // 8), (shade, 80, 255 - shade))
                on_step(StepPreview(step, steps, preview if self.previews else None, 0.01 * step))
        cancelled = done < steps
        params = ResolvedRequest(
            task=task.name,
            prompt=request.prompt,
            full_prompt=task.render_prompt(request.prompt),
            negative_prompt=task.negative_prompt,
            seed=seed,
            steps=task.steps,
            guidance=task.guidance,
            scheduler=task.scheduler,
            width=width,
            height=height,
            adapters=tuple(AdapterUse(a.name, 1.0 if a.weight is None else a.weight, "0" * 64) for a in task.adapters),
            init_image="" if init is None else init.path,
            init_image_sha256="" if init is None else init.sha256,
            strength=strength,
        )
        image = None if cancelled else self._image(params)
        if image is not None and init is not None and strength is not None:
            # The more strength, the less of the init; the seed's mark strong enough to show.
            _, green, blue = typing.cast(tuple[int, int, int], image.getpixel((0, 0)))
            noise = Image.new("RGB", image.size, ((seed * 37) % 256, green, blue))
            image = Image.blend(init.image, noise, strength)
        warnings = init_notices(init)
        return GenerationResult(
            params=params,
            model=self._model or MODEL,
            image=image,
            cancelled=cancelled,
            steps_done=done,
            timings=Timings(first_preview_ms=10.0, image_ms=None if cancelled else 100.0, step_ms=(10.0,) * done),
            memory=MemoryPeaks(peak_rss_mb=300.0, process_peak_rss_mb=310.0),
            warnings=warnings,
        )

    @staticmethod
    def _image(params: ResolvedRequest) -> Image.Image:
        """A flat colour from the settings that shape a real image (same settings, same image)."""
        key = f"{params.full_prompt}|{params.negative_prompt}|{params.guidance}|{params.scheduler}|{params.task}"
        mix = zlib.crc32(key.encode())
        colour = (params.seed % 256, (mix >> 8) % 256, (mix >> 16) % 256)
        return Image.new("RGB", (params.width, params.height), colour)
