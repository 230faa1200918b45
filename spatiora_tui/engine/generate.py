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
from dataclasses import dataclass, field
from typing import Any

from spatiora_tui.config import PreviewSettings
from spatiora_tui.engine.api import (
    EngineOOM,
    MemoryPeaks,
    ModelInfo,
    ResolvedRequest,
    StepCallback,
    StepPreview,
    Timings,
)
from spatiora_tui.engine.preview import decode_latents, latent_to_rgb, vae_preview
from spatiora_tui.hw import process_peak_rss_mb, process_rss_mb
from spatiora_tui.hw.memory import release_freed_memory
from spatiora_tui.hw.telemetry import Telemetry


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler called `name`, built from the model's own scheduler config."""
    import diffusers

    kinds: dict[str, tuple[str, dict[str, Any]]] = {
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_a": ("EulerAncestralDiscreteScheduler", {}),
        "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "dpmpp_2m_karras": (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        ),
        "ddim": ("DDIMScheduler", {}),
        "unipc": ("UniPCMultistepScheduler", {}),
        "heun": ("HeunDiscreteScheduler", {}),
    }
    class_name, overrides = kinds[name]
    return getattr(diffusers, class_name).from_config(base_config, **overrides)


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


@dataclass
class _RunState:
    start: float
    total: int
    every_n: int
    step_ends: list[float] = field(default_factory=list)
    first_preview: float | None = None
    peak_rss: float = 0.0

    def sample_memory(self) -> None:
        self.peak_rss = max(self.peak_rss, process_rss_mb())


def run_generation(
    pipe: Any,
    model: ModelInfo,
    params: ResolvedRequest,
    preview: PreviewSettings,
    on_step: StepCallback | None,
    cancel: threading.Event,
    switch_ms: float = 0.0,
    telemetry: Telemetry | None = None,
) -> tuple[Any, bool, int, Timings, MemoryPeaks]:
    """Run the pipeline once. Returns (image or None, cancelled, steps done, timings, memory).

    Marks the stages text encode, denoise and VAE decode on `telemetry`: the pipeline encodes
    the prompt and then calls the UNet, so the UNet's first call ends text encoding.
    """
    import torch

    telemetry = telemetry or Telemetry()
    on_cuda = model.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    depth = telemetry.depth
    stage_mark = telemetry.mark()
    state = _RunState(start=time.perf_counter(), total=params.steps, every_n=preview.every_n_steps)
    state.sample_memory()

    pipe.scheduler = make_scheduler(params.scheduler, pipe.scheduler.config)
    tap = _X0Tap(pipe.scheduler)
    previewing = preview.method != "none" and on_step is not None

    def on_step_end(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        now = time.perf_counter()
        state.step_ends.append(now)
        state.sample_memory()
        step = index + 1
        # Second-order samplers (Heun) evaluate the model twice per step: count evaluations.
        state.total = max(len(pipeline.scheduler.timesteps), step)
        if cancel.is_set():
            pipeline._interrupt = True  # the pipeline skips the remaining steps
            return {}
        if on_step is None:
            return {}
        image = None
        if previewing and (step % state.every_n == 0 or step == state.total):
            latent = tap.latest if tap.latest is not None else tensors["latents"]
            if preview.method == "vae":
                image = vae_preview(latent, pipeline.vae, pipeline.image_processor)
            else:
                image = latent_to_rgb(latent, model.family)
            if state.first_preview is None:
                state.first_preview = time.perf_counter()
        on_step(StepPreview(step=step, total=state.total, image=image, elapsed_s=now - state.start))
        return {}

    def unet_called(_module: Any, _args: Any) -> None:
        if telemetry.current_stage == "text encode":
            telemetry.exit()
            telemetry.enter("denoise")

    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    stage = "denoise"
    image = None
    decode_ms = None
    hook = pipe.unet.register_forward_pre_hook(unet_called)
    try:
        if not cancel.is_set():
            telemetry.enter("text encode")
            out = pipe(
                prompt=params.full_prompt,
                negative_prompt=params.negative_prompt or None,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                width=params.width,
                height=params.height,
                generator=generator,
                output_type="latent",
                callback_on_step_end=on_step_end,
            )
            telemetry.close_to(depth)
        cancelled = cancel.is_set()
        if not cancelled:
            stage = "VAE decode"
            t_decode = time.perf_counter()
            with telemetry.stage("VAE decode"):
                image = decode_latents(out.images, pipe.vae, pipe.image_processor)
            decode_ms = (time.perf_counter() - t_decode) * 1000.0
            state.sample_memory()
    except torch.cuda.OutOfMemoryError:
        _release_cuda(on_cuda)
        raise EngineOOM(_oom_advice(telemetry.current_stage or stage, params)) from None
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        _release_cuda(on_cuda)
        raise EngineOOM(_oom_advice(telemetry.current_stage or stage, params)) from None
    finally:
        hook.remove()
        telemetry.close_to(depth)

    if not on_cuda:
        release_freed_memory()  # the decode's activations, freed but kept by the allocator
    stages = telemetry.records_since(stage_mark)
    ends = state.step_ends
    steps_ms = tuple((b - a) * 1000.0 for a, b in zip([state.start, *ends[:-1]], ends))
    timings = Timings(
        switch_ms=switch_ms,
        first_preview_ms=None if state.first_preview is None else (state.first_preview - state.start) * 1000.0,
        image_ms=None if image is None else (time.perf_counter() - state.start) * 1000.0,
        decode_ms=decode_ms,
        step_ms=steps_ms,
    )
    # The stages' peaks are exact where the platform keeps high-water marks (hw/telemetry.py);
    # the per-step samples cover platforms where it does not.
    allocated = [r.peak_cuda_allocated_mb for r in stages if r.peak_cuda_allocated_mb is not None]
    reserved = [r.peak_cuda_reserved_mb for r in stages if r.peak_cuda_reserved_mb is not None]
    if on_cuda:
        allocated.append(torch.cuda.max_memory_allocated() / 2**20)
        reserved.append(torch.cuda.max_memory_reserved() / 2**20)
    memory = MemoryPeaks(
        peak_rss_mb=max([state.peak_rss, *(r.peak_rss_mb for r in stages)]),
        process_peak_rss_mb=process_peak_rss_mb(),
        cuda_max_allocated_mb=max(allocated) if allocated else None,
        cuda_max_reserved_mb=max(reserved) if reserved else None,
    )
    steps_done = min(len(ends), state.total)
    return image, image is None, steps_done, timings, memory


def _release_cuda(on_cuda: bool) -> None:
    if on_cuda:
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def _oom_advice(stage: str, params: ResolvedRequest) -> str:
    return (
        f"out of memory during {stage} at {params.width}x{params.height}; memory was released. "
        "Lower width/height, use dtype = \"fp16\", or close other GPU programs, then try again"
    )

