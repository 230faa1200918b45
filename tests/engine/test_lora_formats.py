"""LoRA files as they are shared, each checked against its deltas merged into the weights by hand.

Files are written in the key layouts the tools produce (tests/lora_files.py), from the model's own
module names: Kohya for SD 1.x (diffusers block names) and SDXL (the original model's block names,
lora_te1_/lora_te2_), with and without text-encoder parts, LoCon convolutions, alphas that vary
per module, and the peft layout. "Exact" is float rounding: the outputs of the text encoders and
one UNet step agree to 1e-4, while the adapter itself moves them by far more.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from spatiora_tui.config import AdapterRef
from spatiora_tui.engine.adapters import LoraManager
from spatiora_tui.engine.adapters.layouts import unet_layers
from spatiora_tui.engine.api import EngineError
from tests import fake_files, lora_files

CASES: dict[str, dict[str, Any]] = {
    "kohya": dict(components=("unet",)),
    "kohya with text encoders": dict(components=("unet", "text_encoder", "text_encoder_2")),
    "locon": dict(components=("unet",), conv=True),
    "per-module alphas": dict(components=("unet", "text_encoder", "text_encoder_2"), varying_alphas=True),
}


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def model(request, tmp_path_factory: pytest.TempPathFactory):
    """(family, pipeline, an untouched copy, its one LoRA manager, the manager's folder)."""
    from tests.tiny_models import tiny_pipeline

    pipe = tiny_pipeline(request.param, seed=5)
    folder = tmp_path_factory.mktemp(f"loras-{request.param}")
    return request.param, pipe, copy.deepcopy(pipe), LoraManager(pipe, request.param, [folder]), folder


@pytest.mark.parametrize("case", list(CASES))
def test_a_kohya_family_file_draws_exactly_its_merged_deltas(model, case: str) -> None:
    family, pipe, pristine, manager, folder = model
    options = dict(CASES[case])
    if family != "sdxl":
        options["components"] = tuple(c for c in options["components"] if c != "text_encoder_2")
    name = case.replace(" ", "_")
    reference = lora_files.write_kohya(pristine, folder / f"{name}.safetensors", **options)
    base = lora_files.conditioned_output(pipe)
    manager.activate([AdapterRef(name, 0.7)])
    try:
        got = lora_files.conditioned_output(pipe)
    finally:
        manager.activate([])
        manager.evict(name)
    want = lora_files.conditioned_output(lora_files.merged_by_hand(pristine, reference, 0.7))
    assert (want - base).abs().max() > 0.05, "the adapter changes the output"
    assert (got - want).abs().max() < 1e-4
    assert torch.equal(lora_files.conditioned_output(pipe), base), "and leaves nothing behind"


def test_a_peft_file_draws_exactly_its_merged_deltas(model) -> None:
    family, pipe, pristine, manager, folder = model
    reference = lora_files.write_peft(pristine, folder / "peft.safetensors")
    manager.activate([AdapterRef("peft", 1.3)])
    try:
        got = lora_files.conditioned_output(pipe)
    finally:
        manager.activate([])
        manager.evict("peft")
    want = lora_files.conditioned_output(lora_files.merged_by_hand(pristine, reference, 1.3))
    assert (got - want).abs().max() < 1e-4


def test_a_peft_dora_file_draws_its_rescaled_weights_and_is_never_swapped_or_fused(model) -> None:
    family, pipe, pristine, manager, folder = model
    reference = lora_files.write_dora(pristine, folder / "dora.safetensors")
    try:
        manager.activate([AdapterRef("dora", 0.6)])
        got = lora_files.conditioned_output(pipe)
        want = lora_files.conditioned_output(lora_files.merged_dora(pristine, reference, 0.6))
        assert (got - want).abs().max() < 1e-4
        manager.fuse = True  # fused mode leaves a DoRA set unfused: the same output
        manager.activate([AdapterRef("dora", 0.6)])
        assert not manager.fused
        assert (lora_files.conditioned_output(pipe) - want).abs().max() < 1e-4
    finally:
        manager.fuse = False
        manager.activate([])
        manager.evict("dora")
    assert unet_layers(pipe, manager.catalog.read("dora", family)) == {}, "never copied into another adapter's layers"


def test_a_sdxl_file_mixing_two_block_namings_is_refused_not_half_applied(model) -> None:
    # diffusers drops the original-named (sgm) layers of a file that also has diffusers-named
    # ones, silently; the layer count taken from the file catches it.
    family, pipe, pristine, manager, tmp_path = model
    if family != "sdxl":
        pytest.skip("SDXL's block naming")
    from safetensors.torch import load_file, save_file

    lora_files.write_kohya(pristine, tmp_path / "sgm.safetensors", conv=True)  # sgm-named convs
    tensors = load_file(str(tmp_path / "sgm.safetensors"))
    extra = {
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
    }
    save_file({**tensors, **extra}, str(tmp_path / "mixed.safetensors"))
    before = lora_files.conditioned_output(pipe)
    with pytest.raises(EngineError, match=r"'mixed'.*only \d+ of its \d+ LoRA layers"):
        manager.activate([AdapterRef("mixed", 1.0)])
    assert "mixed" not in manager.resident
    assert torch.equal(lora_files.conditioned_output(pipe), before)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("loha", "LyCORIS LoHa adapter"),
        ("lokr", "LyCORIS LoKr adapter"),
    ],
)
def test_lycoris_loha_and_lokr_are_refused_by_name(model, kind: str, fragment: str) -> None:
    family, pipe, pristine, manager, folder = model
    lora_files.write_lycoris(pristine, folder / f"{kind}.safetensors", kind)
    before = lora_files.conditioned_output(pipe)
    with pytest.raises(EngineError) as info:
        manager.activate([AdapterRef(kind, 1.0)])
    assert fragment in str(info.value) and "convert it to a LoRA" in str(info.value)
    assert torch.equal(lora_files.conditioned_output(pipe), before)


@pytest.mark.parametrize(
    ("tensors", "metadata", "fragment"),
    [
        ({"lora_unet_a.lora_down.weight": (4, 32), "lora_unet_a.dora_scale": (32, 1)}, {}, "Kohya/LyCORIS DoRA"),
        ({"lora_unet_a.oft_blocks": (4, 8, 8)}, {}, "OFT/BOFT"),
        ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 64)}, {}, "a LoRA for Flux"),
        ({"lora_unet_x_attn2_to_k.lora_down.weight": (4, 32)}, {"ss_base_model_version": "sd3"}, "a LoRA for SD3"),
    ],
)
def test_other_formats_and_architectures_are_refused_before_loading(model, tensors, metadata, fragment: str) -> None:
    family, pipe, _, manager, folder = model
    fake_files.write(folder / "other.safetensors", tensors, metadata, dtype="F32")
    with pytest.raises(EngineError, match=fragment):
        manager.activate([AdapterRef("other", 1.0)])
    assert "other" not in manager.resident


def test_a_lora_trained_for_another_family_is_refused_with_its_metadata_quoted(model) -> None:
    family, pipe, pristine, manager, folder = model
    other = "sd_v1" if family == "sdxl" else "sdxl_base_v1-0"
    lora_files.write_kohya(pristine, folder / "foreign.safetensors", metadata={"ss_base_model_version": other})
    with pytest.raises(EngineError, match=rf"targets .* \(its training metadata says {other}\) but the base model"):
        manager.activate([AdapterRef("foreign", 1.0)])
