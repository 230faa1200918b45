"""What a model file is, from its tensor layout alone: every variant, every refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spatiora_tui.config import MODEL_VARIANTS
from spatiora_tui.library.identify import (
    V_PROBE,
    VARIANT_CHOICES,
    identify_checkpoint,
    identify_embedding,
    identify_lora,
    lora_format,
    trigger_words,
)
from spatiora_tui.library.safetensors_file import FileProblem, read_floats, read_header
from tests import fake_files
from tests.fake_files import UNET, checkpoint


def test_config_and_identify_name_the_same_variants() -> None:
    assert tuple(MODEL_VARIANTS) == VARIANT_CHOICES


@pytest.mark.parametrize(
    ("family", "channels", "variant", "label"),
    [
        ("sd1", 4, "sd15", "SD 1.x"),
        ("sd1", 9, "sd15-inpaint", "SD 1.x inpainting"),
        ("sd2", 4, "sd2", "SD 2.x"),
        ("sd2", 9, "sd2-inpaint", "SD 2.x inpainting"),
        ("sdxl", 4, "sdxl", "SDXL"),
        ("sdxl", 9, "sdxl-inpaint", "SDXL inpainting"),
    ],
)
def test_each_family_and_inpainting_is_told_from_the_tensors(
    tmp_path: Path, family: str, channels: int, variant: str, label: str
) -> None:
    path = fake_files.write(tmp_path / "model.safetensors", checkpoint(family, channels))
    info = identify_checkpoint(path)
    assert info.variant.name == variant and info.variant.label == label
    assert info.variant.prediction == "epsilon" and info.variant.inpaint == (channels == 9)


@pytest.mark.parametrize(("spread", "variant"), [(0.02, "sd2"), (0.2, "sd2-v")])
def test_sd2_v_prediction_is_guessed_from_the_probe_weights(tmp_path: Path, spread: float, variant: str) -> None:
    values = [(-spread if i % 2 else spread) for i in range(320)]  # std == spread
    path = fake_files.write(tmp_path / "m.safetensors", checkpoint("sd2"), values={V_PROBE: values})
    info = identify_checkpoint(path)
    assert info.variant.name == variant
    assert "guessed from its weights" in info.how and f"{spread:.3f}" in info.how
    assert read_floats(read_header(path), V_PROBE)[:2] == pytest.approx([spread, -spread])


def test_a_v_pred_marker_makes_any_family_v_prediction_and_ztsnr_rescales(tmp_path: Path) -> None:
    path = fake_files.write(tmp_path / "m.safetensors", checkpoint("sdxl", extra={"v_pred": (0,), "ztsnr": (0,)}))
    info = identify_checkpoint(path)
    assert info.variant.name == "sdxl-v" and info.variant.prediction == "v_prediction"
    assert info.zero_snr and info.how == "from its v_pred marker"


def test_a_yaml_beside_the_checkpoint_decides_v_prediction(tmp_path: Path) -> None:
    values = {V_PROBE: [0.0] * 320}  # the weights alone would say epsilon
    path = fake_files.write(tmp_path / "m.safetensors", checkpoint("sd2"), values=values)
    (tmp_path / "m.yaml").write_text(
        'model:\n  params:\n    parameterization: "v"\n    unet_config:\n      params:\n'
        "        in_channels: 4\n        context_dim: 1024\n"
    )
    info = identify_checkpoint(path)
    assert info.variant.name == "sd2-v" and info.how == "from m.yaml"


def test_sgm_yaml_vscaling_marks_sdxl_v(tmp_path: Path) -> None:
    path = fake_files.write(tmp_path / "xl.safetensors", checkpoint("sdxl"))
    (tmp_path / "xl.yaml").write_text(
        "model:\n  params:\n    denoiser_config:\n      params:\n        scaling_config:\n"
        "          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling\n"
        "    network_config:\n      params:\n        context_dim: 2048\n"
    )
    assert identify_checkpoint(path).variant.name == "sdxl-v"


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("model: [unclosed", "cannot be read"),
        ("just: text\n", "not a Stable Diffusion original config"),
        ("model:\n  params:\n    unet_config:\n      params:\n        context_dim: 2048\n", "describes another model"),
    ],
)
def test_a_bad_or_mismatched_yaml_is_reported(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    path = fake_files.write(tmp_path / "m.safetensors", checkpoint("sd1"))
    (tmp_path / "m.yaml").write_text(yaml_text)
    with pytest.raises(FileProblem, match=fragment):
        identify_checkpoint(path)


def test_a_pinned_variant_wins_and_a_contradicting_pin_is_refused(tmp_path: Path) -> None:
    path = fake_files.write(tmp_path / "m.safetensors", checkpoint("sd2"))
    info = identify_checkpoint(path, "sd2-v")
    assert info.variant.name == "sd2-v" and info.how == "pinned in config.toml"
    with pytest.raises(FileProblem, match=r"variant = 'sdxl' \(SDXL\) but m.safetensors is a SD 2.x checkpoint"):
        identify_checkpoint(path, "sdxl")


LORA = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
}


@pytest.mark.parametrize(
    ("tensors", "fragments"),
    [
        (LORA, ["is a LoRA", "<lora:NAME:1>"]),
        ({"emb_params": (4, 768)}, ["textual-inversion embedding", "embeddings folder"]),
        ({"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}, ["is a VAE", "baked into the checkpoint"]),
        ({"encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3)}, ["is a VAE"]),
        ({"double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, ["a Flux model", "1.x, 2.x and SDXL"]),
        ({UNET + "double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, ["a Flux model"]),
        ({UNET + "joint_blocks.0.x_block.attn.qkv.weight": (4608, 1536)}, ["Stable Diffusion 3"]),
        ({"control_model.input_blocks.0.0.weight": (320, 4, 3, 3)}, ["ControlNet"]),
        (
            {"conv_in.weight": (320, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3)},
            ["diffusers UNet weight file", "model_index.json"],
        ),
        ({"weird.tensor": (3, 3, 3)}, ["not a Stable Diffusion file Spatiora knows"]),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path: Path, tensors, fragments) -> None:
    path = fake_files.write(tmp_path / "thing.safetensors", tensors)
    with pytest.raises(FileProblem) as info:
        identify_checkpoint(path)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert str(info.value).startswith("thing.safetensors is ")


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        (checkpoint("sd1", vae=False), "no VAE baked in"),
        (checkpoint("sd1", te=False), "no text encoder"),
        (checkpoint("sd1", in_channels=8), "InstructPix2Pix"),
        (checkpoint("sd2", in_channels=7), "7 input channels"),
        (
            {
                **{k: v for k, v in checkpoint("sdxl").items() if "embedders" not in k},
                "conditioner.embedders.0.model.positional_embedding": (77, 1280),
            },
            "SDXL refiner",
        ),
    ],
)
def test_checkpoints_spatiora_cannot_run_are_refused_with_the_reason(tmp_path: Path, keys, fragment: str) -> None:
    path = fake_files.write(tmp_path / "m.safetensors", keys)
    with pytest.raises(FileProblem, match=fragment):
        identify_checkpoint(path)


def test_a_download_cut_short_is_named_and_nothing_is_read_past_the_end(tmp_path: Path) -> None:
    whole = fake_files.write(tmp_path / "m.safetensors", checkpoint("sd1"))
    data = whole.read_bytes()
    for size in (0, 5, 100, len(data) - 1):
        cut = tmp_path / f"cut{size}.safetensors"
        cut.write_bytes(data[:size])
        with pytest.raises(FileProblem, match="damaged or was cut short|cut short"):
            identify_checkpoint(cut)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"[1, 2]", "not a table of tensors"),
        (b"{not json", "not the JSON"),
        (json.dumps({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}).encode(), "unknown dtype"),
        (json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode(), "has 4 bytes for"),
        (json.dumps({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(), "malformed shape"),
        (json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode(), "impossible byte offsets"),
        (json.dumps({"__metadata__": {"x": "y"}}).encode(), "holds no tensors"),
    ],
)
def test_a_damaged_header_is_reported_plainly(tmp_path: Path, header: bytes, fragment: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(FileProblem, match=fragment):
        read_header(path)


# -- LoRAs and embeddings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["lora_unet_a_to_q.lora_down.weight"], "kohya"),
        (["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"], "lycoris-locon"),
        (["lora_unet_a.hada_w1_a", "lora_unet_a.hada_w1_b"], "lycoris-loha"),
        (["lora_unet_a.lokr_w1", "lora_unet_a.lokr_w2"], "lycoris-lokr"),
        (["lora_unet_a.oft_blocks"], "lycoris-oft"),
        (["lora_unet_a.lora_down.weight", "lora_unet_a.dora_scale"], "dora-kohya"),
        (["unet.a.lora_A.weight", "unet.a.lora_magnitude_vector"], "dora-peft"),
        (["unet.a.lora_A.weight", "unet.a.lora_B.weight"], "peft"),
        (["unet.a.processor.to_q_lora.down.weight"], "diffusers"),
    ],
)
def test_lora_layouts_are_named(keys: list[str], expected: str) -> None:
    assert lora_format(keys) == expected


@pytest.mark.parametrize(
    ("tensors", "metadata", "family", "foreign"),
    [
        (LORA, {}, "sd1", None),
        ({k: (4, 1024) if "down" in k else v for k, v in LORA.items()}, {}, "sd2", None),
        ({**LORA, "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}, {}, "sdxl", None),
        (LORA, {"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl", None),
        (LORA, {"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2", None),
        ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072)}, {}, None, "Flux"),
        (LORA, {"ss_base_model_version": "flux1"}, None, "Flux"),
    ],
)
def test_a_loras_base_comes_from_its_metadata_or_its_widths(tmp_path: Path, tensors, metadata, family, foreign) -> None:
    path = fake_files.write(tmp_path / "l.safetensors", tensors, metadata)
    info = identify_lora(path)
    assert (info.family, info.foreign) == (family, foreign)


def test_trigger_words_come_from_kohyas_tag_frequencies() -> None:
    frequency = {"10_room": {"oak floor": 12, "spz_room": 30, "window": 3}, "5_plan": {"spz_room": 5, "plan": 9}}
    assert trigger_words({"ss_tag_frequency": json.dumps(frequency)}, limit=3) == ("spz_room", "oak floor", "plan")
    assert trigger_words({"modelspec.trigger_phrase": "spz, plan view"}) == ("spz", "plan view")
    assert trigger_words({"ss_tag_frequency": "{broken"}) == ()


@pytest.mark.parametrize(
    ("tensors", "family", "vectors"),
    [
        ({"emb_params": (3, 768)}, "sd1", 3),
        ({"emb_params": (1, 1024)}, "sd2", 1),
        ({"<cat-toy>": (768,)}, "sd1", 1),
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "sdxl", 2),
    ],
)
def test_embeddings_are_told_apart_by_their_widths(tmp_path: Path, tensors, family: str, vectors: int) -> None:
    info = identify_embedding(fake_files.write(tmp_path / "e.safetensors", tensors))
    assert (info.family, info.vectors) == (family, vectors)
    assert math.prod(info.widths) > 0
