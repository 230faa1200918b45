"""Step previews by method: TAESD found on disk in each of its forms, or a clear fallback.

The TAESD decoders here are diffusers AutoencoderTiny models with random weights, built in the
test: the architecture (and so the loading, shapes and cost) is the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spatiora_tui.config import PathSettings, PreviewSettings
from spatiora_tui.engine.api import GenerationRequest, GenerationResult, StepPreview
from spatiora_tui.engine.local import LocalEngine
from spatiora_tui.notices import NoticeKind, of_kind
from tests.helpers import small_settings

REQUEST = GenerationRequest(prompt="a hall", task="floorplan", seed=3, steps=3, width=64, height=64)


def random_taesd(seed: int = 0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model


def write_folder(model, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def write_original_decoder(model, path: Path) -> Path:
    """The decoder alone in the original layout (madebyollin/taesd's taesd_decoder.safetensors,
    as ComfyUI and AUTOMATIC1111 keep it): a Clamp module counts as index 0 there."""
    from safetensors.torch import save_file

    tensors = {}
    for key, value in model.decoder.state_dict().items():
        _, index, rest = key.split(".", 2)  # layers.N.rest
        tensors[f"{int(index) + 1}.{rest}"] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def run(engine: LocalEngine) -> tuple[list[StepPreview], GenerationResult]:
    previews: list[StepPreview] = []
    result = engine.generate(REQUEST, on_step=previews.append)
    return previews, result


def engine_with(cache_dir: Path, root: Path, **preview: Any) -> LocalEngine:
    settings = small_settings(root, preview=PreviewSettings(**preview))
    engine = LocalEngine(settings, cache_dir=cache_dir)
    engine.load()
    return engine


def test_taesd_from_a_diffusers_folder_draws_full_size_previews(cache_dir: Path, tmp_path: Path) -> None:
    folder = write_folder(random_taesd(), tmp_path / "taesd")
    engine = engine_with(cache_dir, tmp_path, method="taesd", taesd=str(folder))
    assert engine.model.preview == "TAESD"
    previews, result = run(engine)
    images = [p.image for p in previews if p.image is not None]
    assert len(images) == 3
    # TAESD decodes to pixels (8x the 8x8 latent); latent2rgb would draw one pixel per cell.
    assert all(image.size == (64, 64) for image in images)
    assert not of_kind(result.warnings, NoticeKind.PREVIEW_FALLBACK)


def test_the_original_decoder_file_draws_what_the_diffusers_folder_draws(cache_dir: Path, tmp_path: Path) -> None:
    model = random_taesd(seed=1)
    folder = write_folder(model, tmp_path / "taesd")
    # ComfyUI's layout, found through [paths] installs with no [preview] taesd set.
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    write_original_decoder(model, comfy / "models" / "vae_approx" / "taesd_decoder.safetensors")
    from_folder = engine_with(cache_dir, tmp_path / "a", method="taesd", taesd=str(folder))
    settings = small_settings(
        tmp_path / "b", preview=PreviewSettings(method="taesd"), paths=PathSettings(installs=(str(comfy),))
    )
    from_file = LocalEngine(settings, cache_dir=cache_dir)
    from_file.load()
    assert from_file.model.preview == "TAESD"
    a = [np.asarray(p.image) for p in run(from_folder)[0] if p.image is not None]
    b = [np.asarray(p.image) for p in run(from_file)[0] if p.image is not None]
    assert len(a) == len(b) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the same weights in either layout"


def test_missing_taesd_falls_back_to_latent2rgb_and_says_where_to_put_it(cache_dir: Path, tmp_path: Path) -> None:
    engine = engine_with(cache_dir, tmp_path, method="taesd")
    assert engine.model.preview == "latent2rgb"
    previews, result = run(engine)
    assert [p.image.size for p in previews if p.image is not None] == [(8, 8)] * 3
    (notice,) = of_kind(result.warnings, NoticeKind.PREVIEW_FALLBACK)
    assert "TAESD weights for SD 1.x/2.x not found" in notice and "taesd_decoder.safetensors" in notice
    assert str(cache_dir / "taesd") in notice and "latent2rgb" in notice and "\n" not in notice
    assert not of_kind(run(engine)[1].warnings, NoticeKind.PREVIEW_FALLBACK), "said once, not per image"


def test_a_damaged_taesd_file_is_named(cache_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "taesd_decoder.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    engine = engine_with(cache_dir, tmp_path, method="taesd", taesd=str(bad))
    assert engine.model.preview == "latent2rgb"
    (notice,) = of_kind(run(engine)[1].warnings, NoticeKind.PREVIEW_FALLBACK)
    assert str(bad) in notice and "not a usable TAESD decoder" in notice


@pytest.mark.parametrize(("method", "label", "size"), [("latent2rgb", "latent2rgb", (8, 8)), ("vae", "VAE", (64, 64))])
def test_each_registered_method_reports_its_label(
    cache_dir: Path, tmp_path: Path, method: str, label: str, size: tuple[int, int]
) -> None:
    engine = engine_with(cache_dir, tmp_path, method=method)
    assert engine.model.preview == label
    assert {p.image.size for p in run(engine)[0] if p.image is not None} == {size}


def test_no_previews(cache_dir: Path, tmp_path: Path) -> None:
    engine = engine_with(cache_dir, tmp_path, method="none")
    previews, result = run(engine)
    assert engine.model.preview == "" and len(previews) == 3 and all(p.image is None for p in previews)
    assert result.image is not None
