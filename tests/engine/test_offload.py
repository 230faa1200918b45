"""[model] offload, vae_tiling and vae_slicing, as far as a CPU can check them: the choice `auto`
makes, the refusal of a mode the device cannot do, and the demo model loading and drawing under
each setting the CPU can run. Offload with adapters needs CUDA (diffusers re-applies the offload
hooks after a LoRA load, and that needs an accelerator): benchmarks/gpu_check.py's offload
sections check it there, images compared with mode none."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.engine import pipeline
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.local import LocalEngine
from spatiora_tui.engine.pipeline import choose_offload
from spatiora_tui.library.families import FAMILIES
from spatiora_tui.notices import NoticeKind, of_kind
from tests.helpers import small_settings

SD1 = FAMILIES["sd1"].working_mb


@pytest.mark.parametrize(
    ("free_mb", "expected"),
    [
        (None, "none"),  # the free memory could not be read: the user's setting is none
        (80_000, "none"),  # an H100: everything on the GPU
        (2_000 + SD1, "none"),  # exactly enough
        (2_000 + SD1 - 1, "model"),  # the whole model does not fit, its UNet does
        (1_700 + SD1, "model"),
        (1_700 + SD1 - 1, "sequential"),  # not even the UNet with its working memory
        (1_000, "sequential"),
    ],
)
def test_auto_takes_the_least_offload_that_fits_the_free_vram(free_mb: float | None, expected: str) -> None:
    assert choose_offload("auto", "cuda", free_mb, weights_mb=2_000, largest_mb=1_700, family="sd1") == expected


def test_an_explicit_mode_is_kept_on_cuda_and_refused_off_it() -> None:
    for mode in ("none", "model", "group", "sequential"):
        assert choose_offload(mode, "cuda", 80_000, 2_000, 1_700, "sd1") == mode
    assert choose_offload("auto", "cpu", None, 2_000, 1_700, "sd1") == "none"
    with pytest.raises(EngineError, match=r'offload = "model" needs a CUDA GPU; this runs on cpu: use "auto"'):
        choose_offload("model", "cpu", None, 2_000, 1_700, "sd1")


def test_sdxl_needs_more_working_memory_than_sd1_at_its_size() -> None:
    free = 7_000 + FAMILIES["sd1"].working_mb
    assert choose_offload("auto", "cuda", free, 7_000, 5_000, "sd1") == "none"
    assert choose_offload("auto", "cuda", free, 7_000, 5_000, "sdxl") != "none"


def engine_with(tmp_path: Path, cache_dir: Path, **model: Any) -> LocalEngine:
    settings = small_settings(tmp_path)
    settings = dataclasses.replace(settings, model=dataclasses.replace(settings.model, **model))
    return LocalEngine(settings, cache_dir=cache_dir)


def test_a_mode_the_cpu_cannot_do_fails_the_load_in_one_line(tmp_path: Path, cache_dir: Path) -> None:
    engine = engine_with(tmp_path, cache_dir, offload="group")
    with pytest.raises(EngineError, match='offload = "group" needs a CUDA GPU'):
        engine.load()


def test_vae_tiling_and_slicing_are_applied_and_the_image_is_drawn(tmp_path: Path, cache_dir: Path) -> None:
    engine = engine_with(tmp_path, cache_dir, vae_tiling=True, vae_slicing=True)
    info = engine.load()
    assert info.offload == "none"
    vae = engine.pipeline.vae
    assert vae.use_tiling and vae.use_slicing
    result = engine.generate(GenerationRequest(prompt="a loft", task="interior", seed=1, steps=2))
    assert result.image is not None and result.image.size == (64, 64)


def test_layer_by_layer_offload_runs_adapters_unfused_and_says_so(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequential offload loads on the CPU (running it needs an accelerator): fusing would write
    into placeholder weights, so the engine turns fusing off and tells the user with the next
    image. The UNet's parameters are placeholders then; adapters are given to the loader in RAM."""
    settings = small_settings(tmp_path)
    settings = dataclasses.replace(settings, adapters=dataclasses.replace(settings.adapters, fuse=True))
    monkeypatch.setattr(pipeline, "choose_offload", lambda *args: "sequential")
    engine = LocalEngine(settings, cache_dir=cache_dir)
    assert engine.load().offload == "sequential"
    assert engine.loras.fuse is False
    assert engine.pipeline.unet.device.type == "meta" and str(engine.loras.slots.placement()[0]) == "cpu"
    (notice,) = of_kind(engine._notices, NoticeKind.OFFLOAD)
    assert "fuse is off with sequential offload: adapters run unfused" in notice
