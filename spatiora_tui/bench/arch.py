"""The models the benchmarks run: the demo, or the real SD 1.5 / SDXL architecture with random
weights, and the random LoRA adapters written for them.

`--arch sd15|sdxl` builds each component from the config folders Spatiora ships (the published
UNet, VAE, text encoder and scheduler configurations, engine/configs/) with random weights, and
the shipped CLIP tokenizer: time and memory match the real models while the images mean nothing,
and nothing is downloaded. `--arch demo` is the demo model (seconds; what CI runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spatiora_tui.config import AdapterRef, ModelSettings, Settings

ARCHES = ("demo", "sd15", "sdxl")
#: The model family each architecture is (what its adapters are checked against).
FAMILY = {"demo": "sd1", "sd15": "sd1", "sdxl": "sdxl"}
#: What the benchmarks' adapters target in every transformer block: the attention projections
#: and the feed-forward ones, as a typical style or subject LoRA does.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def default_rank(arch: str) -> int:
    return 4 if arch == "demo" else 64


def build_pipeline(
    arch: str,
    model_settings: ModelSettings,
    cache_dir: Path,
    say: Callable[[str], object] = print,
    unet_only: bool = False,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(pipeline, ModelInfo) for `arch` on the device and dtype `model_settings` ask for; the
    random weights are drawn from `seed`.

    `unet_only`: only the UNet at full size, every other part the demo's (for measurements that
    touch nothing but the UNet, such as adapter switches: they then fit in less memory)."""
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}; choose {', '.join(ARCHES)}")
    from spatiora_tui.engine.pipeline import load_pipeline

    demo = dataclasses.replace(model_settings, source="demo")
    if arch == "demo":
        pipe, info, _ = load_pipeline(demo, cache_dir, say)
        return pipe, info
    if unet_only:
        pipe, info, _ = load_pipeline(demo, cache_dir, say)
        say(f"building the {arch} UNet with random weights")
        pipe.unet = random_components(arch, pipe.unet.dtype, ("unet",), seed)["unet"].to(pipe.unet.device)
        return pipe, dataclasses.replace(info, name=f"{arch} UNet (random weights) in the demo pipeline")
    return _random_pipeline(arch, model_settings, say, seed)


def write_random_adapters(pipe: Any, folder: Path, names: Sequence[str], rank: int) -> list[Path]:
    """One random rank-`rank` LoRA per name on TARGET_MODULES, each with its own seed."""
    from spatiora_tui.engine.demo import write_random_lora

    return [
        write_random_lora(pipe.unet, folder, name, rank, TARGET_MODULES, seed=1000 + i) for i, name in enumerate(names)
    ]


def engine_parts(
    settings: Settings,
    arch: str,
    tasks: tuple[str, ...],
    steps: int,
    size: tuple[int, int],
    adapters_dir: Path,
    rank: int | None = None,
    device: str | None = None,
    say: Callable[[str], object] = print,
) -> tuple[Settings, Any]:
    """Settings and a loader for a LocalEngine on `arch`: the config's tasks (prompt template,
    guidance, scheduler) at the given steps and size, each with its own random adapter written
    into `adapters_dir` when the model loads. What `spatiora bench` runs, for other measurements
    (the UI's cost on a real-size model) to run the same way."""
    rank = rank or default_rank(arch)
    width, height = size
    names = tuple(adapter_name(task) for task in tasks)
    bench_tasks = tuple(
        dataclasses.replace(
            settings.task(task), steps=steps, width=width, height=height, adapters=(AdapterRef(name, 1.0),)
        )
        for task, name in zip(tasks, names)
    )
    model = dataclasses.replace(settings.model, source="demo" if arch == "demo" else settings.model.source)
    if device:
        model = dataclasses.replace(model, device=device)  # type: ignore[arg-type]  # checked by the loader
    bench_settings = dataclasses.replace(
        settings, model=model, tasks=bench_tasks, adapters=dataclasses.replace(settings.adapters, dir=str(adapters_dir))
    )

    def load(model_settings: Any, cache_dir: Path, on_progress: Callable[[str], object] | None = None) -> Any:
        # The adapters are drawn on the UNet's real weights: offload (which may leave only
        # placeholders in the modules) comes after; "auto" is "none" for these random models.
        offload = model_settings.offload
        pipe, info = build_pipeline(
            arch, dataclasses.replace(model_settings, offload="none"), cache_dir, on_progress or say
        )
        say(f"writing {len(names)} rank-{rank} task adapters…")
        write_random_adapters(pipe, adapters_dir, names, rank)
        if offload not in ("none", "auto") and info.device == "cuda":
            from spatiora_tui.engine.pipeline import place

            info = dataclasses.replace(info, offload=place(pipe, info.device, model_settings, info.family, say))
        return pipe, info, None

    return bench_settings, load


def adapter_name(task: str) -> str:
    return f"bench_{task}"


def random_components(
    arch: str, dtype: Any, parts: Sequence[str], seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """The named components of `arch` from the shipped configs, random weights, built in `dtype`
    (never a float32 copy first) on `device` (on a GPU the random init takes seconds, where the
    CPU's half-precision kernels take minutes for SDXL)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from spatiora_tui.engine.clip_tokenizer import CONFIGS

    folder = CONFIGS / arch
    builders: dict[str, Callable[[], Any]] = {
        "unet": lambda: diffusers.UNet2DConditionModel.from_config(
            diffusers.UNet2DConditionModel.load_config(folder / "unet")
        ),
        "vae": lambda: diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder / "vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
        ),
    }
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return {part: builders[part]().eval() for part in parts}
    finally:
        torch.set_default_dtype(previous)


def _random_pipeline(
    arch: str, model_settings: ModelSettings, say: Callable[[str], object], seed: int
) -> tuple[Any, Any]:
    from spatiora_tui.engine.pipeline import dtype_label, place, quiet_libraries, resolve_device, resolve_dtype

    quiet_libraries()
    import diffusers

    from spatiora_tui.engine.api import ModelInfo
    from spatiora_tui.engine.clip_tokenizer import CONFIGS, PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer

    device = resolve_device(model_settings.device)
    dtype = resolve_dtype(model_settings.dtype, device)
    say(f"building the {arch} architecture with random weights")
    xl = arch == "sdxl"
    names = ("unet", "vae", "text_encoder", *(("text_encoder_2",) if xl else ()))
    parts = random_components(arch, dtype, names, seed, device="cuda" if device == "cuda" else "cpu")
    scheduler = diffusers.EulerDiscreteScheduler.from_config(
        diffusers.EulerDiscreteScheduler.load_config(CONFIGS / arch / "scheduler")
    )
    if xl:
        pipe = diffusers.StableDiffusionXLPipeline(
            **parts,
            tokenizer=clip_tokenizer(PAD_CLIP_L),
            tokenizer_2=clip_tokenizer(PAD_OPEN_CLIP),
            scheduler=scheduler,
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            **parts,
            tokenizer=clip_tokenizer(PAD_CLIP_L),
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    offload = place(pipe, device, model_settings, FAMILY[arch], say)
    info = ModelInfo(
        name=f"{arch} architecture (random weights)",
        source=f"random:{arch}",
        kind="random",
        family=FAMILY[arch],
        device=device,
        dtype=dtype_label(dtype),
        random_weights=True,
        offload=offload,
    )
    return pipe, info
