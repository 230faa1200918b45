"""The LoRA manager on bad input: a clear message naming the adapter, and nothing changes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spatiora_tui.config import AdapterRef, TaskSettings
from spatiora_tui.engine.api import EngineError, GenerationRequest
from tests.helpers import small_settings, small_tasks


@pytest.fixture(scope="module")
def adapter_engine(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from spatiora_tui.engine.local import LocalEngine

    root = tmp_path_factory.mktemp("adapters-root")
    (root / "adapters").mkdir()
    broken = TaskSettings(
        name="broken", adapters=(AdapterRef("interior", 0.8), AdapterRef("bad", 1.0)), steps=3, width=64, height=64
    )
    eng = LocalEngine(small_settings(root, tasks=(*small_tasks(), broken)), cache_dir=cache_dir)
    eng.load()
    return eng


def demo_adapter(cache_dir: Path, name: str) -> Path:
    return cache_dir / "demo-v1" / "adapters" / f"{name}.safetensors"


def image_of(engine) -> np.ndarray:
    return np.asarray(engine.generate(GenerationRequest(prompt="p", task=engine.active_task, seed=9)).image)


def write_bad(engine, cache_dir: Path, kind: str) -> None:
    folder = engine.settings.adapter_dir
    for old in folder.iterdir():
        old.unlink() if old.is_file() else shutil.rmtree(old)
    target = folder / "bad.safetensors"
    if kind == "truncated":
        data = demo_adapter(cache_dir, "interior").read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        target.write_bytes(b"this is not a safetensors file")
    elif kind == "empty":
        save_file({}, str(target))
    elif kind == "sdxl":
        save_file({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 1280)}, str(target))
    elif kind == "wrong_shapes":
        tensors = load_file(str(demo_adapter(cache_dir, "interior")))
        save_file({k: torch.zeros(v.shape[0] + 3, v.shape[1] + 5) for k, v in tensors.items()}, str(target))
    elif kind == "unknown_keys":
        save_file(
            {
                "lora_unet_no_such_block_to_q.lora_down.weight": torch.zeros(4, 32),
                "lora_unet_no_such_block_to_q.lora_up.weight": torch.zeros(32, 4),
            },
            str(target),
        )
    elif kind == "not_lora":
        save_file({"model.some.weight": torch.zeros(4, 32)}, str(target))
    elif kind in ("nan", "inf_up"):
        tensors = load_file(str(demo_adapter(cache_dir, "interior")))
        poison = float("nan") if kind == "nan" else float("inf")
        save_file(
            {
                k: torch.full_like(v, poison) if (i % 2 == 0 if kind == "nan" else "up" in k) else v
                for i, (k, v) in enumerate(tensors.items())
            },
            str(target),
        )
    elif kind == "pickle":
        (folder / "bad.ckpt").write_bytes(b"\x80\x04not really")
    elif kind == "missing":
        pass


@pytest.mark.parametrize(
    ("kind", "fragments"),
    [
        ("truncated", ["'bad'", "not a valid .safetensors", "truncated or corrupt"]),
        ("garbage", ["'bad'", "not a valid .safetensors"]),
        ("empty", ["'bad'", "holds no tensors"]),
        ("sdxl", ["'bad'", "targets SDXL", "SD 1.x"]),
        ("wrong_shapes", ["'bad'", "could not be loaded", "another base model"]),
        ("unknown_keys", ["'bad'", "match no layer", "no.such.block", "another model architecture"]),
        ("not_lora", ["'bad'", "no LoRA tensors"]),
        ("nan", ["'bad'", "NaN or infinite", "would be black"]),
        ("inf_up", ["'bad'", "NaN or infinite"]),
        ("pickle", ["'bad'", "pickle", "arbitrary code", ".safetensors", "[security] allow_pickle = true"]),
        ("missing", ["'bad'", "not found", "bad.safetensors"]),
    ],
)
def test_bad_adapter_is_refused_and_nothing_changes(
    adapter_engine, cache_dir: Path, kind: str, fragments: list[str]
) -> None:
    engine = adapter_engine
    engine.switch_task("floorplan")
    before_image = image_of(engine)
    before_active, before_resident = engine.loras.active, engine.loras.resident
    write_bad(engine, cache_dir, kind)

    with pytest.raises(EngineError) as info:
        engine.switch_task("broken")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"

    assert engine.active_task == "floorplan"
    assert engine.loras.active == before_active
    assert "bad" not in engine.loras.resident and set(before_resident) <= set(engine.loras.resident)
    assert np.array_equal(image_of(engine), before_image), "the next image is exactly as before"


def test_generate_in_a_broken_task_fails_and_keeps_the_active_one(adapter_engine, cache_dir: Path) -> None:
    engine = adapter_engine
    engine.switch_task("interior")
    write_bad(engine, cache_dir, "garbage")
    with pytest.raises(EngineError, match="'bad'"):
        engine.generate(GenerationRequest(prompt="p", task="broken", seed=1))
    assert engine.active_task == "interior"


def test_an_adapter_whose_file_name_has_dots_is_usable_under_its_own_name(adapter_engine, cache_dir: Path) -> None:
    """A public LoRA is often named detail_v1.5: peft refuses '.' in its names, so the adapter
    gets a safe name inside peft and keeps its own everywhere the user sees it."""
    engine = adapter_engine
    write_bad(engine, cache_dir, "missing")
    shutil.copy(demo_adapter(cache_dir, "floorplan"), engine.settings.adapter_dir / "detail_v1.5.safetensors")
    result = engine.generate(GenerationRequest(prompt="p <lora:detail_v1.5:0.8>", task="base", seed=1))
    assert [use.name for use in result.params.adapters] == ["detail_v1.5"]
    assert result.image is not None


def test_user_adapter_folder_wins_over_demo_and_loads_once(adapter_engine, cache_dir: Path) -> None:
    engine = adapter_engine
    write_bad(engine, cache_dir, "missing")
    found = engine.loras.available()
    assert found["interior"] == demo_adapter(cache_dir, "interior")
    user_copy = engine.settings.adapter_dir / "custom"
    user_copy.mkdir()
    shutil.copy(demo_adapter(cache_dir, "floorplan"), user_copy / "pytorch_lora_weights.safetensors")
    assert engine.loras.available()["custom"] == user_copy / "pytorch_lora_weights.safetensors"
    report = engine.loras.activate([AdapterRef("custom", 0.5)])
    assert report.loaded_from_disk == ("custom",) and report.active[0].weight == 0.5
    again = engine.loras.activate([AdapterRef("custom", 0.7)])
    assert again.loaded_from_disk == () and again.active[0].weight == 0.7


def test_fast_switch_matches_diffusers_set_adapters(adapter_engine) -> None:
    # Two adapters at two weights through our layer list, then through diffusers' own
    # set_adapters (which walks every module): the same image, to the last bit.
    from spatiora_tui.engine.api import AdapterUse

    adapter_engine.switch_task("interior")
    adapter_engine.switch_task("floorplan")  # both resident now
    loras = adapter_engine.loras
    pair = (AdapterUse("interior", 0.7, ""), AdapterUse("floorplan", 0.4, ""))

    def image(seed: int = 3) -> np.ndarray:
        return np.asarray(adapter_engine.generate(GenerationRequest(prompt="p", task="floorplan", seed=seed)).image)

    loras.slots.apply(pair)
    ours = image()
    adapter_engine.pipeline.set_adapters(["interior", "floorplan"], adapter_weights=[0.7, 0.4])
    theirs = image()
    loras.slots.apply(loras.active)
    assert np.array_equal(ours, theirs)
    assert not np.array_equal(ours, image()), "the pair really differs from floorplan alone"


def test_evict_takes_an_adapter_off_the_device_and_refuses_the_active_one(adapter_engine) -> None:
    adapter_engine.switch_task("interior")
    adapter_engine.switch_task("floorplan")
    loras = adapter_engine.loras
    with pytest.raises(EngineError, match="active"):
        loras.evict("floorplan")
    before = image_of(adapter_engine)
    loras.evict("interior")
    assert "interior" not in loras.resident
    from spatiora_tui.config import AdapterRef

    report = loras.activate([AdapterRef("interior", 0.8)])
    assert report.paths == (("interior", "loaded from RAM"),) and report.loaded_from_disk == ()
    adapter_engine.switch_task("floorplan")
    assert np.array_equal(image_of(adapter_engine), before), "evicting another adapter changes nothing"


def to_kohya(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers/peft LoRA state dict rewritten the way Kohya's scripts and A1111 share LoRAs:
    lora_unet_<module path with underscores>.lora_down/lora_up.weight, plus an alpha per module."""
    kohya: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        module, kind = key.removeprefix("unet.").rsplit(".lora_", 1)
        base = "lora_unet_" + module.replace(".", "_")
        kohya[f"{base}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
        if kind.startswith("A"):
            kohya[f"{base}.alpha"] = torch.tensor(float(tensor.shape[0]))  # alpha = rank: scale 1
    return kohya


def test_a_kohya_file_loads_and_draws_what_its_diffusers_twin_draws(adapter_engine, cache_dir: Path) -> None:
    from spatiora_tui.config import AdapterRef

    folder = adapter_engine.settings.adapter_dir
    kohya = to_kohya(load_file(str(demo_adapter(cache_dir, "interior"))))
    assert any(k.startswith("lora_unet_down_blocks_") and k.endswith(".lora_down.weight") for k in kohya)
    save_file(kohya, str(folder / "kohya_interior.safetensors"))
    try:
        adapter_engine.switch_task("interior")
        diffusers_image = image_of(adapter_engine)
        adapter_engine.loras.activate([AdapterRef("kohya_interior", 0.8)])  # interior's weight
        kohya_image = image_of(adapter_engine)
        adapter_engine.loras.activate([])
        base_image = image_of(adapter_engine)
    finally:
        adapter_engine.switch_task("interior")
        adapter_engine.loras.evict("kohya_interior")
        (folder / "kohya_interior.safetensors").unlink()
    diff = np.abs(kohya_image.astype(np.int16) - diffusers_image.astype(np.int16))
    assert diff.max() <= 1, "the same weights in Kohya's layout give the same image"
    assert np.abs(kohya_image.astype(np.int16) - base_image.astype(np.int16)).max() > 10, "and it changes the output"


def test_pickle_adapters_load_only_when_allowed(cache_dir: Path, tmp_path: Path) -> None:
    """With [security] allow_pickle = true a .pt adapter loads (weights_only unpickling) and draws
    what its .safetensors twin draws; a .pt that is not a state dict of tensors is refused."""
    import dataclasses

    from spatiora_tui.config import SecuritySettings
    from spatiora_tui.engine.local import LocalEngine

    (tmp_path / "adapters").mkdir()
    common: dict[str, Any] = dict(steps=3, width=64, height=64, prompt_template="{prompt}", scheduler="euler")
    tasks = (
        *small_tasks(),
        TaskSettings(name="p", adapters=(AdapterRef("pickled", 0.8),), **common),
        TaskSettings(name="t", adapters=(AdapterRef("twin", 0.8),), **common),
    )
    settings = small_settings(tmp_path, tasks=tasks)
    refused = LocalEngine(settings, cache_dir=cache_dir)
    refused.load()  # builds the demo (and its adapters) when this test runs first
    tensors = load_file(str(demo_adapter(cache_dir, "interior")))
    torch.save(tensors, tmp_path / "adapters" / "pickled.pt")
    save_file(tensors, str(tmp_path / "adapters" / "twin.safetensors"))  # same tensors, no metadata either
    torch.save([1, 2, 3], tmp_path / "adapters" / "junk.pt")
    with pytest.raises(EngineError, match="allow_pickle = true"):
        refused.switch_task("p")
    del refused

    engine = LocalEngine(
        dataclasses.replace(settings, security=SecuritySettings(allow_pickle=True)), cache_dir=cache_dir
    )
    engine.load()
    engine.switch_task("p")
    request = GenerationRequest(prompt="p", task="p", seed=9)
    pickled = np.asarray(engine.generate(request).image)
    twin = np.asarray(engine.generate(dataclasses.replace(request, task="t")).image)
    assert np.abs(pickled.astype(np.int16) - twin.astype(np.int16)).max() <= 1
    with pytest.raises(EngineError, match="'junk'.*holds no tensors"):
        engine.loras.activate([AdapterRef("junk", 1.0)])
