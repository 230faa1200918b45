"""One generation: scheduler choice, step previews, cancel, timings and memory peaks.

The pipeline runs with output_type="latent" and the VAE decode happens here, so that a cancelled
run never pays for a decode and the decode is timed on its own. Previews use the scheduler's
prediction of the clean latent (x0) when it gives one: the x0 of an early step already shows the
composition, while the current latent is still mostly noise.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spatiora_tui import failpoints
from spatiora_tui.config import SCHEDULERS, PreviewSettings
from spatiora_tui.engine.api import (
    EngineOOM,
    MemoryPeaks,
    ModelInfo,
    ResolvedRequest,
    StepCallback,
    StepPreview,
    Timings,
    is_out_of_memory,
)
from spatiora_tui.engine.conditioning import encode_prompts
from spatiora_tui.engine.init_image import InitImage
from spatiora_tui.engine.previews import Previewer
from spatiora_tui.engine.previews.vae import decode_latents
from spatiora_tui.hw import process_peak_rss_mb, process_rss_mb
from spatiora_tui.hw.memory import release_freed_memory, release_memory
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.notices import Notice, NoticeKind
from spatiora_tui.units import MB


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler called `name`, built from the model's own scheduler config."""
    import diffusers

    scheduler = SCHEDULERS[name]
    return getattr(diffusers, scheduler.diffusers_class).from_config(base_config, **dict(scheduler.options))


class _X0Tap:
    """Wraps a scheduler's step() to keep its latest prediction of the clean latent."""

    def __init__(self, scheduler: Any) -> None:
        self.latest: Any = None
        original = scheduler.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            x0 = getattr(out, "pred_original_sample", None)
            if x0 is None and isinstance(out, tuple) and len(out) > 1:
                x0 = out[1]
            if x0 is None:
                # Multistep solvers (DPM++, UniPC) keep their x0 predictions in model_outputs.
                outputs = getattr(scheduler, "model_outputs", None)
                if outputs and outputs[-1] is not None and self._outputs_are_x0(scheduler):
                    x0 = outputs[-1]
            self.latest = x0
            return out

        # Keep step()'s signature visible: the pipeline passes `generator` (and `eta`) only to a
        # step() whose signature names them, and an ancestral sampler without the generator
        # draws its noise from the global RNG, so a seed would not reproduce its image.
        scheduler.step = functools.wraps(original)(step)

    @staticmethod
    def _outputs_are_x0(scheduler: Any) -> bool:
        config = scheduler.config
        algorithm = getattr(config, "algorithm_type", None) or config.get("algorithm_type")
        if algorithm is not None:
            return str(algorithm).startswith(("dpmsolver++", "sde-dpmsolver++"))
        return bool(config.get("predict_x0", False))


#: What a step callback returns to stop the ones after it for this step.
STOP = object()


class StepClock:
    """Times each step and samples memory; counts the steps the scheduler really takes (Heun
    evaluates the model twice a step)."""

    def __init__(self, total: int) -> None:
        self.start = time.perf_counter()
        self.total = total
        self.step_ends: list[float] = []
        self.peak_rss = process_rss_mb()

    def sample_memory(self) -> None:
        self.peak_rss = max(self.peak_rss, process_rss_mb())

    def __call__(self, pipeline: Any, step: int, tensors: dict[str, Any]) -> object:
        self.step_ends.append(time.perf_counter())
        self.sample_memory()
        # The steps this run takes: image-to-image runs the last int(steps x strength) of the
        # scheduler's timesteps, and the pipeline counts them in _num_timesteps.
        runs = getattr(pipeline, "_num_timesteps", None)
        self.total = max(runs if isinstance(runs, int) else len(pipeline.scheduler.timesteps), step)
        return None


class CancelCheck:
    """Stops the pipeline (it skips the remaining steps) once `cancel` is set."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, pipeline: Any, step: int, tensors: dict[str, Any]) -> object:
        if self.cancel.is_set():
            pipeline._interrupt = True
            return STOP  # no preview or progress for a step that is thrown away
        return None


class StepReporter:
    """Reports each step to `on_step`, with a preview of where denoising is heading on the steps
    that carry one (every `every_n`, and the last)."""

    def __init__(
        self, on_step: StepCallback, clock: StepClock, tap: _X0Tap, previewer: Previewer | None, every_n: int
    ) -> None:
        self.on_step, self.clock, self.tap, self.previewer, self.every_n = on_step, clock, tap, previewer, every_n
        self.first_preview: float | None = None

    def __call__(self, pipeline: Any, step: int, tensors: dict[str, Any]) -> object:
        image = None
        if self.previewer is not None and (step % self.every_n == 0 or step == self.clock.total):
            latent = self.tap.latest if self.tap.latest is not None else tensors["latents"]
            image = self.previewer(latent)
            if self.first_preview is None:
                self.first_preview = time.perf_counter()
        elapsed = self.clock.step_ends[-1] - self.clock.start
        self.on_step(StepPreview(step=step, total=self.clock.total, image=image, elapsed_s=elapsed))
        return None


StepHook = Callable[[Any, int, dict[str, Any]], object]


class LatePatch:
    """Overlapped loading's second half: after step `at`, `patch` puts in the adapters that were
    being read while the first steps ran (it waits for the read if it is not done)."""

    def __init__(self, at: int, patch: Callable[[], object]) -> None:
        self.at = at
        self.patch = patch
        self.done = False
        self.ms = 0.0  # how long the patch held the denoising loop (waiting for the read included)

    def run(self) -> None:
        if not self.done:
            start = time.perf_counter()
            self.patch()
            self.ms = (time.perf_counter() - start) * 1000.0
            self.done = True

    def __call__(self, pipeline: Any, step: int, tensors: dict[str, Any]) -> object:
        if step >= self.at:
            self.run()
        return None


def compose(*hooks: StepHook) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """One `callback_on_step_end` for diffusers from step hooks run in order; a hook returning
    STOP ends the step's chain. Hooks change no tensors, so the pipeline gets {} back."""

    def on_step_end(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        for hook in hooks:
            if hook(pipeline, index + 1, tensors) is STOP:
                break
        return {}

    return on_step_end


@dataclass(frozen=True)
class RunOutcome:
    """One run of the pipeline: the image (None when cancelled), what it took, what to tell."""

    image: Any
    cancelled: bool
    steps_done: int
    timings: Timings
    memory: MemoryPeaks
    notes: tuple[Notice, ...] = ()


def run_generation(
    pipe: Any,
    model: ModelInfo,
    params: ResolvedRequest,
    preview: PreviewSettings,
    previewer: Previewer | None,
    on_step: StepCallback | None,
    cancel: threading.Event,
    switch_ms: float = 0.0,
    telemetry: Telemetry | None = None,
    init: InitImage | None = None,
    late: LatePatch | None = None,
) -> RunOutcome:
    """Run the pipeline once, with step hooks for timing, cancel and previews; image-to-image
    from `init` (with `pipe` an image-to-image pipeline) at params.strength.

    Marks the stages text encode, (VAE encode,) denoise and VAE decode on `telemetry`: the
    pipeline encodes the init image and then calls the UNet, so the UNet's first call ends the
    stage before denoising.
    """
    import torch

    telemetry = telemetry or Telemetry()
    on_cuda = model.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    depth = telemetry.depth
    stage_mark = telemetry.mark()
    clock = StepClock(params.steps)
    pipe.scheduler = make_scheduler(params.scheduler, pipe.scheduler.config)
    tap = _X0Tap(pipe.scheduler)
    reporter = StepReporter(on_step, clock, tap, previewer, preview.every_n_steps) if on_step is not None else None
    hooks: list[StepHook] = [clock, CancelCheck(cancel)]
    if late is not None:
        hooks.insert(0, late)  # before the step's preview and the next step
    if reporter is not None:
        hooks.append(reporter)

    def unet_called(_module: Any, _args: Any) -> None:
        if telemetry.current_stage in ("text encode", "VAE encode"):
            telemetry.exit()
            telemetry.enter("denoise")
        failpoints.hit("denoise")

    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    stage = "denoise"
    image = None
    decode_ms = None
    notes: list[Notice] = []
    oom_in: str | None = None
    out = None
    hook = pipe.unet.register_forward_pre_hook(unet_called)
    try:
        if not cancel.is_set():
            telemetry.enter("text encode")
            conditioning = encode_prompts(pipe, params.full_prompt, params.negative_prompt, params.guidance)
            if late is not None and late.at <= 0:
                late.run()  # K = 0: the read overlapped the text encoding only
            if init is not None:
                telemetry.exit()
                telemetry.enter("VAE encode")
            out = pipe(
                **conditioning,
                **_image_inputs(pipe, params, init),
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                generator=generator,
                output_type="latent",
                callback_on_step_end=compose(*hooks),
            )
            del conditioning
            if late is not None:
                late.run()  # fewer steps than K: in now, so that the task is whole for the next image
            telemetry.close_to(depth)
        cancelled = cancel.is_set()
        if not cancelled:
            stage = "VAE decode"
            t_decode = time.perf_counter()
            assert out is not None  # the pipeline ran: it is skipped only when cancelled
            with telemetry.stage("VAE decode"):
                image, tiled = _decode(out.images, pipe, on_cuda)
            if tiled:
                notes.append(
                    Notice(
                        NoticeKind.TILED_DECODE,
                        "the VAE decode ran out of memory, so the image was decoded in tiles "
                        "(same image, up to faint seams); a smaller size avoids it",
                    )
                )
            decode_ms = (time.perf_counter() - t_decode) * 1000.0
            clock.sample_memory()
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(exc):
            raise
        oom_in = telemetry.current_stage or stage
    finally:
        hook.remove()
        telemetry.close_to(depth)
    if oom_in is not None:
        # Out here, not in the except block: the exception's traceback holds the pipeline's
        # frames and their tensors until the block ends, so only now can the memory go back.
        out = None
        release_memory(on_cuda)
        raise EngineOOM(_oom_advice(oom_in, params, on_cuda, model.dtype))

    if not on_cuda:
        release_freed_memory()  # the decode's activations, freed but kept by the allocator
    stages = telemetry.records_since(stage_mark)
    first_preview = reporter.first_preview if reporter is not None else None
    ends = clock.step_ends
    steps_ms = tuple((b - a) * 1000.0 for a, b in zip([clock.start, *ends[:-1]], ends))
    timings = Timings(
        switch_ms=switch_ms,
        first_preview_ms=None if first_preview is None else (first_preview - clock.start) * 1000.0,
        image_ms=None if image is None else (time.perf_counter() - clock.start) * 1000.0,
        decode_ms=decode_ms,
        step_ms=steps_ms,
        late_patch_ms=late.ms if late is not None and late.done else None,
    )
    # The stages' peaks are exact where the platform keeps high-water marks (hw/telemetry.py);
    # the per-step samples cover platforms where it does not.
    allocated = [r.peak_cuda_allocated_mb for r in stages if r.peak_cuda_allocated_mb is not None]
    reserved = [r.peak_cuda_reserved_mb for r in stages if r.peak_cuda_reserved_mb is not None]
    if on_cuda:
        allocated.append(torch.cuda.max_memory_allocated() / MB)
        reserved.append(torch.cuda.max_memory_reserved() / MB)
    memory = MemoryPeaks(
        peak_rss_mb=max([clock.peak_rss, *(r.peak_rss_mb for r in stages)]),
        process_peak_rss_mb=process_peak_rss_mb(),
        cuda_max_allocated_mb=max(allocated) if allocated else None,
        cuda_max_reserved_mb=max(reserved) if reserved else None,
    )
    steps_done = min(len(ends), clock.total)
    return RunOutcome(image, image is None, steps_done, timings, memory, tuple(notes))


#: The image-to-image pipeline of each text-to-image one (their modules are imported with the
#: base's; AutoPipelineForImage2Image would import every pipeline diffusers has: 0.35 s, 18 MB).
_IMG2IMG = {
    "StableDiffusionPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLImg2ImgPipeline",
}


def img2img_pipeline(pipe: Any) -> Any:
    """The image-to-image pipeline over `pipe`'s components (the same objects: nothing is
    loaded, copied or cast, and the adapters active in its UNet are active in it). An
    inpainting pipeline is its own: it runs an init image with a mask over everything.

    Built with the class's constructor, not DiffusionPipeline.from_pipe: that casts every
    component to its `dtype` argument, float32 when none is given, so on a GPU the shared fp16
    model became fp32 in place (measured on an H200: +2,089 MB allocated, txt2img then fp32)."""
    import inspect

    import diffusers

    if hasattr(pipe, "mask_processor"):
        return pipe
    name = _IMG2IMG.get(type(pipe).__name__)
    if name is None:  # another family: diffusers' mapping (its from_pipe passes the modules as they are)
        img2img = diffusers.AutoPipelineForImage2Image.from_pipe(pipe)
    else:
        pipeline_class = getattr(diffusers, name)
        accepted = inspect.signature(pipeline_class.__init__).parameters
        kwargs = {key: value for key, value in pipe.components.items() if key in accepted}
        for option in ("requires_safety_checker", "force_zeros_for_empty_prompt", "requires_aesthetics_score"):
            if option in accepted and option in pipe.config:
                kwargs[option] = pipe.config[option]
        img2img = pipeline_class(**kwargs)
    img2img.set_progress_bar_config(disable=True)
    return img2img


def _image_inputs(pipe: Any, params: ResolvedRequest, init: InitImage | None) -> dict[str, Any]:
    """The pipeline's image inputs. Text-to-image: the size, and for an inpainting model a blank
    image masked everywhere at full strength (AUTOMATIC1111 feeds such a model the same).
    Image-to-image: the init image and strength (the image's size is the size), and for an
    inpainting model a mask over everything."""
    from PIL import Image

    size = (params.width, params.height)
    inpainting = hasattr(pipe, "mask_processor")
    if init is None:
        if not inpainting:
            return {"width": size[0], "height": size[1]}
        blank = Image.new("RGB", size, (127, 127, 127))
        return {
            "image": blank,
            "mask_image": Image.new("L", size, 255),
            "strength": 1.0,
            "width": size[0],
            "height": size[1],
        }
    inputs: dict[str, Any] = {"image": init.image, "strength": params.strength}
    if inpainting:
        inputs.update(mask_image=Image.new("L", size, 255), width=size[0], height=size[1])
    return inputs


def _decode(latents: Any, pipe: Any, on_cuda: bool) -> tuple[Any, bool]:
    """The final VAE decode; when it runs out of memory, once more in tiles (as ComfyUI does),
    which needs a fraction of the memory. Returns (image, decoded in tiles)."""
    try:
        failpoints.hit("vae decode")
        return decode_latents(latents, pipe.vae, pipe.image_processor), False
    except (RuntimeError, MemoryError) as exc:  # MemoryError: the CPU allocator's
        if not is_out_of_memory(exc) or not hasattr(pipe.vae, "enable_tiling"):
            raise
    release_memory(on_cuda)
    pipe.vae.enable_tiling()
    try:
        failpoints.hit("vae decode")
        return decode_latents(latents, pipe.vae, pipe.image_processor), True
    finally:
        pipe.vae.disable_tiling()


def _oom_advice(stage: str, params: ResolvedRequest, on_cuda: bool, dtype: str = "fp32") -> str:
    if on_cuda:
        where = "close other GPU programs" + (' or use dtype = "fp16"' if dtype == "fp32" else "")
    else:
        where = "close other programs"
    half = (params.width // 2 // 8 * 8, params.height // 2 // 8 * 8)
    lower = f"Lower width/height (e.g. {half[0]}x{half[1]})" if min(half) >= 64 else "Lower width/height"
    return (
        f"out of memory during {stage} at {params.width}x{params.height}; memory was released. "
        f"{lower} or {where}, then generate again"
    )
