"""A1111/Civitai single-file checkpoints load offline, come back tensor for tensor, and draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spatiora_tui.config import ModelSettings
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.clip_tokenizer import CONFIGS
from spatiora_tui.engine.ldm_layout import pipeline_to_ldm
from spatiora_tui.engine.pipeline import TRAINED_BETAS, load_pipeline
from tests.engine.helpers import tiny_settings
from tests.helpers import FAMILIES


def components(pipe) -> dict[str, torch.nn.Module]:
    return {
        n: getattr(pipe, n)
        for n in ("unet", "vae", "text_encoder", "text_encoder_2")
        if getattr(pipe, n, None) is not None
    }


@pytest.mark.parametrize("key", [f"{f}{'-inpaint' if i else ''}" for f, i in FAMILIES])
def test_each_family_loads_from_one_file_with_every_tensor_intact(tiny, tmp_path: Path, key: str) -> None:
    model = tiny[key]
    settings = ModelSettings(source=str(model.path), config=str(model.config), device="cpu")
    pipe, info, _ = load_pipeline(settings, tmp_path)
    assert info.kind == "single_file" and info.family == model.family
    assert ("inpainting" in info.variant) == model.inpaint
    assert info.sha256 is not None and len(info.sha256) == 64 and info.short_hash == info.sha256[:10]
    for name, module in components(model.pipe).items():
        loaded = getattr(pipe, name).state_dict()
        for tensor_name, tensor in module.state_dict().items():
            if tensor_name.endswith("position_ids"):
                continue
            assert torch.equal(loaded[tensor_name], tensor), f"{name}.{tensor_name}"
    config = pipe.scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == TRAINED_BETAS
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer.pad_token == ("!" if model.family == "sd2" else "<|endoftext|>")
    if model.family == "sdxl":
        assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0


@pytest.mark.parametrize(
    ("extra", "prediction", "zero_snr"),
    [
        ({"v_pred": torch.tensor([])}, "v_prediction", False),
        ({"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, "v_prediction", True),
    ],
)
def test_markers_set_the_scheduler_and_keep_the_trained_betas(
    tiny, tmp_path: Path, extra, prediction, zero_snr
) -> None:
    from safetensors.torch import save_file

    from spatiora_tui.engine.ldm_layout import pipeline_to_ldm

    model = tiny["sdxl"]
    path = tmp_path / "vpred.safetensors"
    save_file({**{k: v.contiguous() for k, v in pipeline_to_ldm(model.pipe).items()}, **extra}, str(path))
    pipe, info, _ = load_pipeline(ModelSettings(source=str(path), config=str(model.config), device="cpu"), tmp_path)
    config = pipe.scheduler.config
    assert config.prediction_type == prediction and info.variant == "SDXL v-prediction"
    assert bool(config.get("rescale_betas_zero_snr")) == zero_snr
    assert (config.beta_start, config.beta_end, config.beta_schedule) == TRAINED_BETAS


def test_a_pinned_variant_sets_v_prediction_for_sd2(tiny, tmp_path: Path) -> None:
    model = tiny["sd2"]
    settings = ModelSettings(source=str(model.path), config=str(model.config), device="cpu", variant="sd2-v")
    pipe, info, _ = load_pipeline(settings, tmp_path)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and info.variant == "SD 2.x 768 v-prediction"


def test_a_file_missing_weights_is_refused_not_half_loaded(tiny, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = tiny["sd1"]
    tensors = {
        k: v.contiguous() for k, v in pipeline_to_ldm(model.pipe).items() if "encoder.layers.1." not in k
    }  # the text encoder's second layer is gone
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(EngineError, match=r"partial lacks weights the architecture needs \(\d+ of its text_encoder"):
        load_pipeline(ModelSettings(source=str(path), config=str(model.config), device="cpu"), tmp_path)


@pytest.mark.parametrize("variant", ["sd15", "sd15-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint"])
def test_the_shipped_config_folders_build_the_published_architectures(variant: str) -> None:
    from accelerate import init_empty_weights  # type: ignore[import-untyped]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    published = {  # parameter counts of the released models
        "sd15": 859_520_964,
        "sd2": 865_910_724,
        "sdxl": 2_567_463_684,
        "vae": 83_653_863,
        "clip-l": 123_060_480,
        "open-clip-h-23": 340_387_840,
        "open-clip-bigg": 694_659_840,
    }
    folder = CONFIGS / variant
    index = json.loads((folder / "model_index.json").read_text())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    base = variant.split("-")[0]
    inpaint_extra = 5 * 320 * 3 * 3 if variant.endswith("inpaint") else 0  # 5 more input channels
    assert count(unet) == published[base] + inpaint_extra
    assert count(vae) == published["vae"]
    assert count(te) == published["open-clip-h-23" if base == "sd2" else "clip-l"]
    if base == "sdxl":
        with init_empty_weights():
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        assert count(te2) == published["open-clip-bigg"]
        assert AutoencoderKL.load_config(folder / "vae")["scaling_factor"] == 0.13025
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == TRAINED_BETAS
    assert scheduler["prediction_type"] == ("v_prediction" if variant == "sd2-v" else "epsilon")
    assert index["_class_name"].endswith("InpaintPipeline") == variant.endswith("inpaint")


@pytest.mark.parametrize("key", ["sd1", "sdxl", "sd1-inpaint"])
def test_a_single_file_model_generates_through_the_engine(tiny, tmp_path: Path, key: str) -> None:
    from spatiora_tui.engine.local import LocalEngine

    engine = LocalEngine(tiny_settings(tiny[key], tmp_path), cache_dir=tmp_path / "cache")
    model = engine.load()
    assert model.name == tiny[key].path.stem
    result = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=3))
    again = engine.generate(GenerationRequest(prompt="a room", task="plain", seed=3))
    assert result.image.size == (64, 64) and result.steps_done == 2
    assert list(result.image.getdata()) == list(again.image.getdata()), "same seed, same image"


@pytest.mark.parametrize(("family", "native"), [("sd1", "512x512"), ("sdxl", "1024x1024")])
def test_a_real_model_asked_for_the_demo_size_is_told_once(tiny, tmp_path: Path, family: str, native: str) -> None:
    """The size it is told to use is its family's native size (library/families.py)."""
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.notices import NoticeKind, of_kind

    engine = LocalEngine(tiny_settings(tiny[family], tmp_path), cache_dir=tmp_path / "cache")
    engine.load()
    told = [
        of_kind(engine.generate(GenerationRequest(prompt="p", task="plain", seed=s)).warnings, NoticeKind.SIZE)
        for s in (1, 2)
    ]
    assert len(told[0]) == 1 and "64x64 is the demo model's size" in told[0][0] and native in told[0][0]
    assert told[1] == [], "said once per model, not with every image"


def test_a_saved_file_has_the_same_bytes_every_time(tmp_path: Path) -> None:
    """safetensors keeps metadata in a hash map, so its own writer shuffles a header with several
    metadata keys from one save to the next; ours sorts it, so the training command's files can
    be compared byte for byte with the shipped ones (tests/engine/test_train_demo.py)."""
    from safetensors import safe_open

    from spatiora_tui.engine.ldm_layout import save_safetensors

    tensors = {"b.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3), "a.alpha": torch.tensor(3.0)}
    metadata = {f"ss_key_{i}": f"välue {i}" for i in range(6)}
    saved = {save_safetensors(tensors, tmp_path / f"{i}.safetensors", metadata).read_bytes() for i in range(12)}
    assert len(saved) == 1
    data = saved.pop()
    assert (8 + int.from_bytes(data[:8], "little")) % 8 == 0  # tensor data stays aligned
    with safe_open(str(tmp_path / "0.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata
        assert set(f.keys()) == tensors.keys()
        for key, value in tensors.items():
            assert torch.equal(f.get_tensor(key), value)
