"""A fake engine and recorded hardware readings, so UI tests run fast and deterministically.

The fake engine follows the Engine protocol exactly; a `gate` lets a test hold a generation in
the middle (to press keys while it runs) without any sleep.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from PIL import Image

from spatiora_tui.config import Settings, TaskSettings
from spatiora_tui.engine.api import (
    AdapterSwitch,
    AdapterUse,
    EngineError,
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
from spatiora_tui.hw import GpuReading, HardwareSampler, HostReading, Telemetry

MODEL = ModelInfo(
    name="fake-model", source="fake", kind="demo", family="sd1", device="cpu", dtype="fp32", preview="latent2rgb"
)


@dataclass
class FakeEngine:
    settings: Settings
    fail_load: str | None = None
    fail_generate: EngineError | None = None
    gate: threading.Event | None = None  # when set, step 2 waits on it
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
        self._model = MODEL
        return MODEL

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

    def switch_task(self, name: str, on_progress=None) -> AdapterSwitch:
        task = self.settings.task(name)
        model_switch = None
        if task.model is not None and self._model is not None and task.model != self._model.name:
            model_switch = self.switch_model(task.model, on_progress)
        self.switches.append(name)
        self._active = name
        return AdapterSwitch(
            task=name,
            adapters=tuple((a.name, a.weight or 1.0) for a in task.adapters),
            duration_ms=6.0,
            warning=self.switch_warning,
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
        task = self.settings.task(request.task)
        if self._active != task.name:
            self.switch_task(task.name)
        if self.telemetry is not None:
            self.telemetry.set_task(task.name)
            self.telemetry.enter("denoise")
        try:
            return self._run(request, task, on_step, cancel)
        finally:
            if self.telemetry is not None:
                self.telemetry.close_to(0)

    def _run(self, request, task, on_step, cancel) -> GenerationResult:
        steps = request.steps or task.steps
        seed = request.seed if request.seed is not None else 1234
        width, height = request.width or task.width, request.height or task.height
        done = 0
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                break
            if step == 2 and self.gate is not None:
                self.at_gate.set()
                self.gate.wait(10)
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
            negative_prompt=request.negative_prompt if request.negative_prompt is not None else task.negative_prompt,
            seed=seed,
            steps=steps,
            guidance=request.guidance or task.guidance,
            scheduler=task.scheduler,
            width=width,
            height=height,
            adapters=tuple(AdapterUse(a.name, a.weight, "0" * 64) for a in task.adapters),
        )
        image = None if cancelled else Image.new("RGB", (width, height), (seed % 256, 120, 40))
        return GenerationResult(
            params=params,
            model=MODEL,
            image=image,
            cancelled=cancelled,
            steps_done=done,
            timings=Timings(first_preview_ms=10.0, image_ms=None if cancelled else 100.0, step_ms=(10.0,) * done),
            memory=MemoryPeaks(peak_rss_mb=300.0, process_peak_rss_mb=310.0),
        )


class RecordedGpu:
    """GPU readings played back from a list (the last one repeats)."""

    def __init__(self, readings=None, error: str | None = None) -> None:
        self.readings = list(readings or [])
        self.error = error
        self.calls = 0

    def read(self):
        self.calls += 1
        if self.error is not None:
            return (), self.error
        return (self.readings[min(self.calls - 1, len(self.readings) - 1)],), None


class FixedHost:
    def read(self) -> HostReading:
        return HostReading(cpu_percent=12.0, process_rss_mb=512.0, ram_used_mb=8192.0, ram_total_mb=24576.0)


class NoCuda:
    def read(self):
        return None


def h100(used_mb: float = 20480.0) -> GpuReading:
    return GpuReading(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        memory_used_mb=used_mb,
        memory_total_mb=81559.0,
        process_memory_mb=used_mb - 512,
        utilization_pct=87.0,
        temperature_c=54.0,
        power_w=412.0,
        power_limit_w=700.0,
    )


def fake_sampler(gpu: bool) -> HardwareSampler:
    backend = RecordedGpu([h100()]) if gpu else RecordedGpu(error="no NVIDIA GPU — NVML unavailable (test)")
    return HardwareSampler(gpu=backend, host=FixedHost(), cuda=NoCuda(), clock=lambda: 0.0)


def fake_telemetry(gpu: bool) -> Telemetry:
    """Recorded readings only: the kernel's real peak counters would leak into the figures."""
    return Telemetry(fake_sampler(gpu), exact_peaks=False)
