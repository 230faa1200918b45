"""LocalEngine: the real engine. One base pipeline, loaded once; task modes switch LoRA sets.

Thread-safe in the simple way a single GPU wants: one operation at a time. Every operation runs
on the engine's own long-lived thread (engine/thread.py says why); callers on any thread wait
for it. The UI calls it from worker threads; the CLI and benchmarks call it directly.
"""

from __future__ import annotations

import gc
import secrets
import threading
from pathlib import Path
from typing import Any, Callable

from spatiora_tui.config import ConfigError, Settings, TaskSettings, task_with_overrides, user_cache_dir
from spatiora_tui.engine.api import (
    AdapterSwitch,
    EngineError,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    ResolvedRequest,
    StepCallback,
)
from spatiora_tui.engine.manifest import add_trigger_words
from spatiora_tui.engine.thread import OneThread
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.hw.watchdog import LeakWatchdog, read_memory


def freeze_long_lived() -> None:
    """Take every object alive now out of the cyclic garbage collector's view (gc.freeze).

    With torch, diffusers and a pipeline imported and loaded, the process holds about 330,000
    tracked objects that live as long as it does. Each full collection walked all of them: 140 ms
    (354 ms once, measured on the UI thread while denoising ran), a pause for whichever thread
    happened to allocate, several times a minute while previews were drawn. Frozen objects are
    still freed by reference counting; only cycles among them stay. Call it once the base model
    is loaded and before any adapter is, so that what a task switch drops is still collected."""
    gc.collect()
    gc.freeze()


class LocalEngine:
    """Runs Stable Diffusion in this process (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        cache_dir: Path | None = None,
        telemetry: Telemetry | None = None,
        loader: Callable[..., tuple[Any, ModelInfo, Path | None]] | None = None,
    ) -> None:
        """`telemetry` is shared with whoever shows it (the TUI's hardware pane); `loader` stands
        in for load_pipeline (benchmarks build the real architectures with random weights)."""
        self._settings = settings
        self._cache_dir = cache_dir or user_cache_dir()
        self._telemetry = telemetry or Telemetry(
            hz=settings.ui.hardware_hz, leak_tolerance_mb=settings.adapters.leak_tolerance_mb
        )
        self._loader = loader
        self._thread = OneThread("spatiora-engine")
        self._pipe: Any = None
        self._model: ModelInfo | None = None
        self._loras: Any = None
        self._active_task: str | None = None

    # -- state --------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def tasks(self) -> tuple[TaskSettings, ...]:
        return self._settings.tasks

    @property
    def active_task(self) -> str | None:
        return self._active_task

    @property
    def model(self) -> ModelInfo | None:
        return self._model

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (for benchmarks and tests)."""
        return self._pipe

    @property
    def loras(self) -> Any:
        return self._loras

    @property
    def watchdog(self) -> LeakWatchdog:
        """The leak watchdog (the telemetry's): checked after every switch and generation."""
        return self._telemetry.watchdog

    @property
    def telemetry(self) -> Telemetry:
        return self._telemetry

    # -- operations ---------------------------------------------------------------------------

    def load(self, on_progress: Callable[[str], None] | None = None) -> ModelInfo:
        return self._thread.call(self._load, on_progress)

    def switch_task(self, name: str) -> AdapterSwitch:
        return self._thread.call(self._switch_task, name)

    def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        return self._thread.call(self._generate, request, on_step, cancel)

    def prefetch(self, task: str) -> None:
        """Not on the engine thread: the reading happens on the LoRA manager's prefetch thread,
        so it never waits for (or delays) a running generation's steps."""
        loras = self._loras
        if loras is None:
            return
        try:
            refs = self._settings.task(task).adapters
        except ConfigError:
            return
        loras.prefetch([ref.name for ref in refs])

    # -- the operations, on the engine thread -------------------------------------------------

    def _load(self, on_progress: Callable[[str], None] | None) -> ModelInfo:
        if self._model is not None:
            return self._model
        from spatiora_tui.engine.adapters import LoraManager
        from spatiora_tui.engine.pipeline import load_pipeline

        with self._telemetry.stage("load base", task=None):
            if self._loader is not None:
                pipe, model, demo_adapters = self._loader(self._settings.model, self._cache_dir, on_progress)
            else:
                pipe, model, demo_adapters = load_pipeline(self._settings.model, self._cache_dir, on_progress,
                                                           allow_pickle=self._settings.security.allow_pickle)
        dirs = [self._settings.adapter_dir]
        if demo_adapters is not None:
            dirs.append(demo_adapters)
        self._pipe, self._model = pipe, model
        adapters = self._settings.adapters
        self._loras = LoraManager(pipe, model.family, dirs, adapters.resident_max, adapters.ram_cache_mb,
                                  adapters.resident_mb, adapters.fuse,
                                  allow_pickle=self._settings.security.allow_pickle)
        freeze_long_lived()
        self.watchdog.set_baseline()  # memory with the base model loaded and no adapter held
        return model

    def _switch_task(self, name: str) -> AdapterSwitch:
        self._require_loaded()
        task = self._task(name)
        previous = self._telemetry.task
        try:
            with self._telemetry.stage("adapter switch", task=task.name):
                report = self._loras.activate(task.adapters)
        except BaseException:
            self._telemetry.set_task(previous)  # nothing changed: the old task is still in force
            raise
        self._active_task = task.name
        held_ram, held_vram = self._loras.held_mb()
        before, after = report.before, report.after
        return AdapterSwitch(
            task=task.name,
            adapters=tuple((a.name, a.weight) for a in report.active),
            duration_ms=report.duration_ms,
            loaded_from_disk=report.loaded_from_disk,
            paths=report.paths,
            tiers=report.tiers,
            phases_ms=report.phases_ms,
            rss_before_mb=before.rss_mb if before else None,
            rss_after_mb=after.rss_mb if after else None,
            vram_before_mb=before.vram_mb if before else None,
            vram_after_mb=after.vram_mb if after else None,
            fused=report.fused,
            warning=self.watchdog.check(after, held_ram, held_vram) if after else None,
        )

    def _generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationResult:
        from spatiora_tui.engine.generate import run_generation

        self._require_loaded()
        assert self._model is not None
        task = self._resolve_task(request)
        mark = self._telemetry.mark()
        switch_ms = 0.0
        if self._active_task != task.name:
            switch_ms = self._switch_task(task.name).duration_ms
        self._telemetry.set_task(task.name)
        params, warnings = self._resolve(request, task)
        image, cancelled, steps_done, timings, memory, notes = run_generation(
            self._pipe, self._model, params, self._settings.preview, on_step,
            cancel or threading.Event(), switch_ms, self._telemetry,
        )
        warnings = (*warnings, *notes)
        held_ram, held_vram = self._loras.held_mb()
        drift = self.watchdog.check(read_memory(), held_ram, held_vram, after="generating")
        if drift is not None:
            warnings = (*warnings, drift)
        return GenerationResult(
            params=params, model=self._model, image=image, cancelled=cancelled,
            steps_done=steps_done, timings=timings, memory=memory, warnings=warnings,
            stages=self._telemetry.records_since(mark),
        )

    # -- helpers ------------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._model is None:
            raise EngineError("the model is not loaded yet; call load() first")

    def _task(self, name: str) -> TaskSettings:
        try:
            return self._settings.task(name)
        except ConfigError as exc:
            raise EngineError(str(exc)) from None

    def _resolve_task(self, request: GenerationRequest) -> TaskSettings:
        task = self._task(request.task)
        try:
            return task_with_overrides(
                task, steps=request.steps, guidance=request.guidance, width=request.width,
                height=request.height, negative_prompt=request.negative_prompt, scheduler=request.scheduler,
            )
        except ConfigError as exc:
            raise EngineError(str(exc)) from None

    def _resolve(self, request: GenerationRequest, task: TaskSettings) -> tuple[ResolvedRequest, tuple[str, ...]]:
        # Trigger words of the active adapters (from their adapter.toml) that the prompt lacks.
        full_prompt, _ = add_trigger_words(task.render_prompt(request.prompt), self._loras.trigger_words())
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        if not 0 <= seed < 2**32:
            raise EngineError(f"seed must be between 0 and {2**32 - 1}, got {seed}")
        params = ResolvedRequest(
            task=task.name, prompt=request.prompt, full_prompt=full_prompt,
            negative_prompt=task.negative_prompt, seed=seed, steps=task.steps, guidance=task.guidance,
            scheduler=task.scheduler, width=task.width, height=task.height,
            adapters=self._loras.active,
        )
        return params, self._prompt_warnings(full_prompt, task.negative_prompt)

    def _prompt_warnings(self, *texts: str) -> tuple[str, ...]:
        tokenizer = getattr(self._pipe, "tokenizer", None)
        if tokenizer is None:
            return ()
        limit = tokenizer.model_max_length
        warnings = []
        for label, text in zip(("prompt", "negative prompt"), texts):
            ids = tokenizer(text, truncation=False).input_ids
            if len(ids) > limit:
                cut = tokenizer.decode(ids[limit - 1 : -1]).strip()
                warnings.append(
                    f"{label} is {len(ids)} tokens; the text encoder reads {limit}, so this end was cut: "
                    f"{_elide(cut, 80)!r}"
                )
        return tuple(warnings)


def _elide(text: str, width: int) -> str:
    """`text` cut to `width` characters by dropping its middle, so both ends stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[-(width - 1 - head):]}"
