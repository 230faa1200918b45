"""The benchmarks' models: the real architectures from the shipped configs, and random LoRAs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spatiora_tui.bench.arch import ARCHES, TARGET_MODULES, build_pipeline, random_components, write_random_adapters
from spatiora_tui.config import ModelSettings

# The published parameter counts (diffusers / transformers, the released SD 1.5 and SDXL weights).
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_the_random_architectures_have_the_published_sizes_and_the_asked_dtype(arch: str) -> None:
    # Shapes only: no memory, no time. (A `with torch.device("meta")` around the call did
    # nothing: the function's own device, "cpu" by default, won, and SDXL's fp16 init took a
    # minute of CPU.)
    parts = random_components(arch, torch.float16, tuple(PUBLISHED[arch]), device="meta")
    assert {p.device.type for part in parts.values() for p in part.parameters()} == {"meta"}
    assert {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()} == PUBLISHED[arch]
    assert {p.dtype for part in parts.values() for p in part.parameters()} == {torch.float16}
    assert torch.get_default_dtype() == torch.float32, "the default dtype is put back"


def test_an_unknown_architecture_is_named(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'sd3'; choose demo, sd15, sdxl"):
        build_pipeline("sd3", ModelSettings(source="demo", device="cpu"), cache_dir)
    assert ARCHES == ("demo", "sd15", "sdxl")


def test_random_adapters_differ_load_and_leave_the_unet_as_it_was(cache_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pipe, info = build_pipeline("demo", ModelSettings(source="demo", device="cpu"), cache_dir)
    modules_before = {name for name, _ in pipe.unet.named_modules()}
    files = write_random_adapters(pipe, tmp_path, ("a", "b"), rank=2)
    assert [f.name for f in files] == ["a.safetensors", "b.safetensors"]
    assert {name for name, _ in pipe.unet.named_modules()} == modules_before, "no LoRA layer left behind"
    a, b = (load_file(str(f)) for f in files)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    targeted = {key.split(".lora")[0].rsplit(".", 1)[-1] for key in a}
    assert targeted <= {m.rsplit(".", 1)[-1] for m in TARGET_MODULES} and {
        p.shape[0] for k, p in a.items() if "lora_A" in k
    } == {2}
    pipe.load_lora_weights(str(files[0]), adapter_name="a")  # diffusers reads them as its own
    assert info.family == "sd1"
