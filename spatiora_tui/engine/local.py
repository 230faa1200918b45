"""LocalEngine: the real engine. One base pipeline, loaded once; task modes switch LoRA sets.

Thread-safe in the simple way a single GPU wants: one operation at a time. Every operation runs
on the engine's own long-lived thread (engine/thread.py says why); callers on any thread wait
for it. The UI calls it from worker threads; the CLI and benchmarks call it directly.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spatiora_tui.config import (
    SEED_RANGE,
    AdapterRef,
    ConfigError,
    Settings,
    TaskSettings,
    random_seed,
    user_cache_dir,
)
from spatiora_tui.engine import previews
from spatiora_tui.engine.api import (
    FAMILY_LABELS,
    AdapterSwitch,
    EngineError,
    GenerationRequest,
    GenerationResult,
    ModelChoice,
    ModelInfo,
    ModelSwitch,
    ResolvedRequest,
    StepCallback,
)
from spatiora_tui.engine.compiled import graphs as compiled_graphs
from spatiora_tui.engine.init_image import InitImage, init_for, init_notices, strength_of
from spatiora_tui.engine.manifest import add_trigger_words
from spatiora_tui.engine.requests import task_for
from spatiora_tui.engine.thread import OneThread
from spatiora_tui.hw.memory import release_memory
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.hw.watchdog import LeakWatchdog, MemoryReading, read_memory
from spatiora_tui.library.catalog import library_folders, resolve_source, scan
from spatiora_tui.library.families import FAMILIES
from spatiora_tui.library.hashing import HashCache
from spatiora_tui.notices import Notice, NoticeKind
from spatiora_tui.prompts import PromptError, extract_lora_tags
from spatiora_tui.units import MB


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
        self._telemetry = telemetry or Telemetry.from_settings(settings)
        self._loader = loader
        self._thread = OneThread("spatiora-engine")
        self._pipe: Any = None
        self._img2img: Any = None  # built from the pipe's components when first asked for
        self._model: ModelInfo | None = None
        self._loras: Any = None
        self._embeddings: Any = None
        self._compiled: Any = None  # compiled.CompiledUNet with [model] compile
        #: Overlapped loading's step for benchmarks (None: [adapters] overlap_steps decides;
        #: a negative one: off); see _overlap_steps.
        self._overlap_override: int | None = None
        self._previewer: previews.Previewer | None = None
        self._notices: list[Notice] = []  # for the user, given with the next generation's result
        self._active_task: str | None = None
        self._warmed = False  # whether an image was made since the model loaded
        self._size_told = False
        self._configured: str | None = None  # model.source, resolved once (see _locate)
        self._hashes = HashCache(self._cache_dir / "hashes.json")

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

    def load(self, on_progress: Callable[[str], object] | None = None, source: str | None = None) -> ModelInfo:
        return self._thread.call(self._load, on_progress, source)

    def switch_task(self, name: str, on_progress: Callable[[str], object] | None = None) -> AdapterSwitch:
        return self._thread.call(self._switch_task, name, on_progress)

    def switch_model(self, source: str, on_progress: Callable[[str], object] | None = None) -> ModelSwitch:
        return self._thread.call(self._switch_model, source, on_progress)

    def models(self) -> tuple[ModelChoice, ...]:
        """Not on the engine thread: it reads file headers only, and may run beside a generation."""
        from spatiora_tui.library.identify import identify_checkpoint
        from spatiora_tui.library.listing import short_problem

        current = self._model.source if self._model is not None else None  # resolved at load
        choices = []
        for entry in scan(library_folders(self._settings).checkpoints).entries.values():
            if entry.pickle and not self._settings.security.allow_pickle:
                kind, loadable = "pickle file: refused ([security] allow_pickle)", False
            elif entry.pickle:
                kind, loadable = "pickle checkpoint", True
            else:
                try:
                    kind, loadable = identify_checkpoint(entry.path).variant.label, True
                except EngineError as exc:  # FileProblem is one
                    kind, loadable = short_problem(exc, entry.path), False
            choices.append(
                ModelChoice(
                    entry.name, str(entry.path), entry.size / MB, kind, loadable, current=str(entry.path) == current
                )
            )
        return tuple(choices)

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

    def _load(self, on_progress: Callable[[str], object] | None, source: str | None) -> ModelInfo:
        if self._model is not None:
            return self._model
        return self._load_model(self._locate(source or self._settings.model.source), on_progress)

    def _locate(self, source: str) -> str:
        """A model source as loaded (an absolute path, a hub id, "demo"). A bare checkpoint name
        walks the model folders, so model.source's own answer is kept."""
        if source == self._settings.model.source:
            if self._configured is None:
                self._configured = resolve_source(self._settings, source)
            return self._configured
        return resolve_source(self._settings, source)

    def _model_settings(self, resolved: str) -> Any:
        """[model] settings for loading `resolved`: variant and config describe model.source
        only; another checkpoint (the picker's, a task's own) is identified from its own file."""
        configured = self._settings.model
        if resolved == self._locate(configured.source):
            return dataclasses.replace(configured, source=resolved)
        return dataclasses.replace(configured, source=resolved, variant="auto", config="")

    def _load_model(self, resolved: str, on_progress: Callable[[str], object] | None) -> ModelInfo:
        """Load `resolved` (see _locate) as the base model and build its adapter and embedding
        managers. Its ModelInfo.source is `resolved`, so comparing sources later walks nothing."""
        from spatiora_tui.engine.adapters import LoraManager
        from spatiora_tui.engine.embeddings import EmbeddingManager
        from spatiora_tui.engine.pipeline import load_pipeline

        folders = library_folders(self._settings)
        model_settings = self._model_settings(resolved)
        with self._telemetry.stage("load base", task=None):
            if self._loader is not None:
                pipe, model, demo_adapters = self._loader(model_settings, self._cache_dir, on_progress)
            else:
                pipe, model, demo_adapters = load_pipeline(
                    model_settings, self._cache_dir, on_progress, allow_pickle=self._settings.security.allow_pickle
                )
        dirs = [self._settings.adapter_dir]
        if demo_adapters is not None:
            dirs.append(demo_adapters)
        self._pipe, self._model, self._img2img = pipe, model, None
        adapters = self._settings.adapters
        compiled, model = self._compile(pipe, model, model_settings)
        # Layer-by-layer offload keeps weights in its hooks, not in the modules: fusing an adapter
        # into them would write into placeholders. Such a model runs its adapters unfused.
        fuse = adapters.fuse and model.offload not in ("sequential", "group")
        if adapters.fuse and not fuse:
            self._notices.append(
                Notice(NoticeKind.OFFLOAD, f"[adapters] fuse is off with {model.offload} offload: adapters run unfused")
            )
        if fuse and compiled is not None:
            fuse = False
            self._notices.append(
                Notice(NoticeKind.COMPILE, "[adapters] fuse is off with [model] compile: adapters run in the lanes")
            )
        tasks = [t for t in self._settings.tasks if t.model is None or self._locate(t.model) == resolved]
        self._loras = LoraManager(
            pipe,
            model.family,
            dirs,
            adapters.resident_max,
            adapters.ram_cache_mb,
            adapters.resident_mb,
            fuse,
            allow_pickle=self._settings.security.allow_pickle,
            library_dirs=folders.loras,
            compiled=compiled,
            lanes=(max([1, *(len(t.adapters) for t in tasks)]), model_settings.compile_rank),
            lane_adapters=tuple(ref.name for t in tasks for ref in t.adapters),
        )
        self._compiled = compiled
        self._embeddings = EmbeddingManager(pipe, model.family, folders.embeddings, self._hashes)
        self._previewer, notice = previews.build(self._settings.preview.method, self._preview_context(pipe, model))
        if notice is not None:
            self._notices.append(notice)  # told with the next image
        model = dataclasses.replace(model, preview=self._previewer.label if self._previewer else "")
        self._model = model
        self._active_task = None
        freeze_long_lived()
        self.watchdog.set_baseline()  # memory with the base model loaded and no adapter held
        self._warmed = False  # taken again after the first image (see _generate)
        self._size_told = False  # whether a too-small size was pointed out for this model
        return model

    def _compile(self, pipe: Any, model: ModelInfo, settings: Any) -> tuple[Any, ModelInfo]:
        """[model] compile: the UNet compiled in place (traced at its first image), or None with
        a notice when the offload mode rules it out."""
        if not settings.compile:
            return None, model
        if model.offload != "none":
            self._notices.append(
                Notice(
                    NoticeKind.COMPILE,
                    f"[model] compile is off with {model.offload} offload (its hooks move weights each step); "
                    'set offload = "none" on a GPU the model fits to compile',
                )
            )
            return None, model
        from spatiora_tui.engine.compiled import CompiledUNet

        compiled = CompiledUNet(pipe.unet, settings.compile_mode)
        return compiled, dataclasses.replace(model, compiled=compiled.mode)

    def _switch_model(self, source: str, on_progress: Callable[[str], object] | None) -> ModelSwitch:
        """Free the base model completely, then load `source`. A file that cannot be a
        checkpoint is refused before anything is freed; if the load fails after that, the
        previous model is loaded again, so the app is never left without one."""
        from spatiora_tui.engine.pipeline import classify_source, single_file_plan

        previous = self._model
        resolved = self._locate(source)
        candidate = classify_source(resolved, self._settings.security.allow_pickle)
        if candidate.kind == "single_file":  # identify it first: a LoRA or a Flux file changes nothing
            single_file_plan(Path(candidate.value), self._model_settings(resolved))
        if previous is not None and previous.source == resolved:
            return ModelSwitch(previous, previous.source, 0.0, notes=("already loaded",))
        start = time.perf_counter()
        before = read_memory()
        ram = self._loras.release() if self._loras is not None else None  # the device tiers go with the model
        if self._compiled is not None:
            self._compiled.release()
        on_cuda = previous is not None and previous.device == "cuda"
        self._pipe = self._img2img = self._model = self._loras = self._embeddings = self._compiled = None
        self._active_task = None
        # The old model's objects were frozen out of the collector's view after it loaded;
        # they must be visible again for its reference cycles to be freed.
        gc.unfreeze()
        release_memory(on_cuda)
        try:
            model = self._load_model(resolved, on_progress)
        except EngineError as exc:
            if previous is None:
                raise
            if on_progress is not None:
                on_progress(f"could not load {source}; loading {previous.name} again")
            self._load_model(previous.source, on_progress)
            if ram:
                self._loras.adopt_ram_cache(ram)
            raise EngineError(f"{exc} ({previous.name} was loaded again)") from None
        if ram and previous is not None and previous.family == model.family:
            self._loras.adopt_ram_cache(ram)  # parsed for the same layer names: no new read
        after = read_memory()
        notes = self._incompatible_adapters(model)
        return ModelSwitch(
            model,
            previous.source if previous else None,
            (time.perf_counter() - start) * 1000.0,
            before.rss_mb,
            after.rss_mb,
            before.vram_mb,
            after.vram_mb,
            notes,
        )

    def _incompatible_adapters(self, model: ModelInfo) -> tuple[str, ...]:
        """One line per task adapter made for another family than `model` (from the files'
        headers; nothing is loaded)."""
        from spatiora_tui.library.identify import identify_lora
        from spatiora_tui.library.safetensors_file import FileProblem

        notes = []
        for task in self._settings.tasks:
            if task.model is not None:
                continue  # it brings its own base model
            for ref in task.adapters:
                try:
                    path = self._loras.find(ref.name)
                    info = identify_lora(path) if path.suffix == ".safetensors" else None
                except (EngineError, FileProblem):
                    continue  # reported when the task is used
                if info is not None and info.family is not None and info.family != model.family:
                    notes.append(
                        Notice(
                            NoticeKind.ADAPTER_FAMILY,
                            f"task {task.name!r}: adapter {ref.name!r} is for "
                            f"{FAMILY_LABELS[info.family]}, the base model is now "
                            f"{FAMILY_LABELS.get(model.family, model.family)}",
                        )
                    )
        return tuple(notes)

    def _switch_task(self, name: str, on_progress: Callable[[str], object] | None = None) -> AdapterSwitch:
        task = self._task(name)
        model_switch = self._ensure_model(task, on_progress)
        self._require_loaded()
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
            model_switch=model_switch,
            uncompiled=report.uncompiled,
        )

    def _ensure_model(self, task: TaskSettings, on_progress: Callable[[str], object] | None) -> ModelSwitch | None:
        """Load the base model `task` runs on, if it names one that is not loaded."""
        if task.model is None or self._model is None:
            return None
        if self._locate(task.model) == self._model.source:
            return None
        return self._switch_model(task.model, on_progress)

    def _generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> GenerationResult:
        from spatiora_tui.engine.generate import run_generation

        self._require_loaded()
        task = self._resolve_task(request)
        init = init_for(request, task)  # read and checked before any switch
        prompt, tags = extract_lora_tags(request.prompt)
        if extract_lora_tags(task.negative_prompt)[1]:
            raise PromptError("the negative prompt has a <lora:...> tag, which only works in the prompt; move it there")
        mark = self._telemetry.mark()
        switch_ms = 0.0
        late = None
        if self._active_task != task.name:
            late = self._overlapped_switch(task, tags, self._overlap_steps)
            if late is None:
                switch_ms = self._switch_task(task.name).duration_ms
            else:
                switch_ms = late.early_ms
        assert self._model is not None
        if tags:
            # The task's set plus the tags' adapters, for this request; the next request of the
            # task switches back to its own set (the task is no longer marked active).
            wanted = _with_tags(task.adapters, tags)
            with self._telemetry.stage("adapter switch", task=task.name):
                report = self._loras.activate(wanted)
            switch_ms += report.duration_ms
            if report.uncompiled:
                self._notices.append(Notice(NoticeKind.COMPILE, f"this image ran uncompiled: {report.uncompiled}"))
            self._active_task = None
        self._telemetry.set_task(task.name)
        params = self._resolve(request, task, prompt, tuple(t.name for t in tags), init)
        small = params.width * params.height <= 128 * 128
        if small and not self._size_told and self._model.kind not in ("demo", "random"):
            self._size_told = True  # said once per model, as the other notices are
            native = FAMILIES[self._model.family].native_size if self._model.family in FAMILIES else "512x512"
            self._notices.append(
                Notice(
                    NoticeKind.SIZE,
                    f"{params.width}x{params.height} is the demo model's size; {self._model.family_label} models "
                    f"draw at about {native}: set the task's width and height in config.toml",
                )
            )
        graphs = compiled_graphs() if self._compiled is not None else 0
        run = run_generation(
            self._img2img_pipe() if init is not None else self._pipe,
            self._model,
            params,
            self._settings.preview,
            self._previewer,
            on_step,
            cancel or threading.Event(),
            switch_ms,
            self._telemetry,
            init,
            late.patch if late is not None else None,
        )
        if late is not None:
            self._active_task = task.name
            self._notices.append(late.notice(self._loras))
        if self._compiled is not None and self._compiled.on and compiled_graphs() > graphs:
            self._notices.append(
                Notice(
                    NoticeKind.COMPILE,
                    f"this image included compiling the UNet for {params.width}x{params.height} "
                    f"({compiled_graphs() - graphs} new graph(s)); the next at this size, batch and prompt "
                    "length run compiled",
                )
            )
        warnings = (
            *self._notices,
            *init_notices(init),
            *self._embeddings.pickled(params.full_prompt, params.negative_prompt),
            *run.notes,
        )
        self._notices.clear()
        held_ram, held_vram = self._loras.held_mb()
        now = read_memory()
        drift = None
        if not self._warmed and run.image is not None:
            # The first image pays one-time costs that stay: CUDA's kernel libraries and
            # handles (+570 MB RSS on an H200), the allocators' pools. Counting them as a leak
            # warned every GPU user after their first image; the baseline is taken after it.
            self._warmed = True
            vram = None if now.vram_mb is None else now.vram_mb - held_vram
            self.watchdog.set_baseline(MemoryReading(now.rss_mb - held_ram, vram))
        else:
            drift = self.watchdog.check(now, held_ram, held_vram, after="generating")
        if drift is not None:
            warnings = (*warnings, drift)
        return GenerationResult(
            params=params,
            model=self._model,
            image=run.image,
            cancelled=run.cancelled,
            steps_done=run.steps_done,
            timings=run.timings,
            memory=run.memory,
            warnings=warnings,
            stages=self._telemetry.records_since(mark),
        )

    def _overlapped_switch(self, task: TaskSettings, tags: tuple[Any, ...], steps: int | None) -> _Overlap | None:
        """[adapters] overlap_steps: when the switch to `task` must read adapters from disk, read
        them on the prefetch thread, switch now to the task's adapters already in memory, and
        return the patch that puts in the rest after `steps` steps. None when there is nothing to
        overlap (or overlap is off, or the request adds adapters by tag)."""
        if steps is None or steps < 0 or tags or task.model is not None:
            return None
        from spatiora_tui.engine.generate import LatePatch

        missing = self._loras.on_disk(task.adapters)
        if not missing:
            return None
        self._loras.prefetch(missing)
        early = tuple(ref for ref in task.adapters if ref.name not in missing)
        with self._telemetry.stage("adapter switch", task=task.name):
            report = self._loras.activate(early)
        self._active_task = None  # whole only once the patch is in

        def patch() -> None:
            with self._telemetry.stage("adapter switch", task=task.name):
                self._loras.activate(task.adapters)

        return _Overlap(LatePatch(steps, patch), missing, report.duration_ms)

    @property
    def _overlap_steps(self) -> int | None:
        """The step overlapped loading puts late adapters in at; None when it is off."""
        if self._overlap_override is not None:
            return self._overlap_override
        return self._settings.adapters.overlap_steps or None

    # -- helpers ------------------------------------------------------------------------------

    def _preview_context(self, pipe: Any, model: ModelInfo) -> previews.PreviewContext:
        """Where TAESD weights may be: [preview] taesd, the installs' approx-decoder folders, the
        cache folder's taesd/."""
        places: list[Path] = []
        if self._settings.preview.taesd:
            places.append(self._settings.resolve_path(self._settings.preview.taesd))
        else:
            for install in library_folders(self._settings).installs:
                places += [install.root / "models" / "vae_approx", install.root / "models" / "VAE-approx"]
            places.append(self._cache_dir / "taesd")
        return previews.PreviewContext(pipe, model.family, tuple(places), self._settings.security.allow_pickle)

    def _require_loaded(self) -> None:
        if self._model is None:
            raise EngineError("the model is not loaded yet; call load() first")

    def _task(self, name: str) -> TaskSettings:
        try:
            return self._settings.task(name)
        except ConfigError as exc:
            raise EngineError(str(exc)) from None

    def _resolve_task(self, request: GenerationRequest) -> TaskSettings:
        return task_for(self._settings, request)

    def _img2img_pipe(self) -> Any:
        """The image-to-image pipeline over the loaded one's components (the same module
        objects, so nothing is loaded or copied and the adapters are the ones active). An
        inpainting model is its own: it runs an init image with a mask that covers everything."""
        from spatiora_tui.engine.generate import img2img_pipeline

        if self._img2img is None:
            self._img2img = img2img_pipeline(self._pipe)
        return self._img2img

    def _resolve(
        self,
        request: GenerationRequest,
        task: TaskSettings,
        prompt: str,
        prompt_loras: tuple[str, ...],
        init: InitImage | None = None,
    ) -> ResolvedRequest:
        # Trigger words of the active adapters (from their adapter.toml) that the prompt lacks.
        full_prompt, _ = add_trigger_words(task.render_prompt(prompt), self._loras.trigger_words())
        seed = request.seed if request.seed is not None else random_seed()
        low, high = SEED_RANGE
        if not low <= seed <= high:
            raise EngineError(f"seed must be between {low} and {high}, got {seed}")
        embeddings = self._embeddings.use(full_prompt, task.negative_prompt)
        return ResolvedRequest(
            task=task.name,
            prompt=request.prompt,
            full_prompt=full_prompt,
            negative_prompt=task.negative_prompt,
            seed=seed,
            steps=task.steps,
            guidance=task.guidance,
            scheduler=task.scheduler,
            width=task.width if init is None else init.size[0],
            height=task.height if init is None else init.size[1],
            adapters=self._loras.active,
            embeddings=embeddings,
            prompt_loras=prompt_loras,
            init_image="" if init is None else init.path,
            init_image_sha256="" if init is None else init.sha256,
            strength=None if init is None else strength_of(request),
        )


@dataclasses.dataclass
class _Overlap:
    """An overlapped switch under way: the patch, the adapters it puts in, the early switch's ms."""

    patch: Any  # generate.LatePatch
    late: tuple[str, ...]
    early_ms: float

    def notice(self, loras: Any) -> Notice:
        names = ", ".join(self.late)
        text = (
            f"overlapped load: {names} read from disk while the first {self.patch.at} step(s) ran without it, "
            f"then put in (the loop waited {self.patch.ms:.0f} ms)"
        )
        text_parts = loras.text_encoder_parts(self.late)
        if text_parts:
            text += (
                f"; {', '.join(text_parts)} also has text-encoder layers, which this image's prompt was encoded "
                "without (set [adapters] overlap_steps = 0 for such adapters)"
            )
        return Notice(NoticeKind.OVERLAP, text)


def _with_tags(adapters: tuple[AdapterRef, ...], tags: tuple[Any, ...]) -> tuple[AdapterRef, ...]:
    """The task's adapters plus the prompt's <lora:...> tags; a tag naming one of the task's
    adapters sets its weight for this request."""
    weights = {tag.name: tag.weight for tag in tags}
    refs = [AdapterRef(ref.name, weights.pop(ref.name)) if ref.name in weights else ref for ref in adapters]
    return tuple(refs) + tuple(AdapterRef(name, weight) for name, weight in weights.items())
