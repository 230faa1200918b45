"""The adapter tiers: disk -> RAM -> device, with in-place swaps into an evicted adapter's layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spatiora_tui.config import AdapterRef, AdapterSettings
from spatiora_tui.engine.api import GenerationRequest
from tests.helpers import small_settings


def demo_adapter(cache_dir: Path, name: str) -> Path:
    return cache_dir / "demo-v1" / "adapters" / f"{name}.safetensors"


def make_engine(cache_dir: Path, root: Path, resident_max: int, ram_cache_mb: float = 64.0):
    from spatiora_tui.engine.local import LocalEngine

    (root / "adapters").mkdir(parents=True, exist_ok=True)
    settings = small_settings(root, adapters=AdapterSettings(resident_max=resident_max, ram_cache_mb=ram_cache_mb))
    engine = LocalEngine(settings, cache_dir=cache_dir)
    engine.load()
    return engine


def write_lower_rank_twin(cache_dir: Path, folder: Path) -> None:
    """interior_b: interior's layers at rank 4 (of 8) with other values: fits interior's slot."""
    torch.manual_seed(5)
    tensors = load_file(str(demo_adapter(cache_dir, "interior")))
    twin = {}
    for key, tensor in tensors.items():
        part = tensor[:4] if ".lora_A." in key else tensor[:, :4]
        twin[key] = (part * (1.5 if ".lora_B." in key else 1.0) + 0.01 * torch.randn_like(part)).contiguous()
    save_file(twin, str(folder / "interior_b.safetensors"))


def image(engine) -> np.ndarray:
    result = engine.generate(GenerationRequest(prompt="p", task=engine.active_task, seed=4))
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def engines(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiers")
    one = make_engine(cache_dir, root, resident_max=1)  # builds the demo model if needed
    fresh = make_engine(cache_dir, root, resident_max=4)
    write_lower_rank_twin(cache_dir, one.settings.adapter_dir)
    return one, fresh


def test_an_adapter_that_fits_is_copied_into_the_evicted_ones_layers(engines) -> None:
    one, fresh = engines
    one.switch_task("interior")
    original = image(one)
    report = one.loras.activate([AdapterRef("interior_b", 0.8)])
    assert report.paths == (("interior_b", "in-place from disk"),)
    assert one.loras.resident == ("interior_b",), "one adapter on the device, as configured"
    swapped = image(one)

    fresh.switch_task("interior")
    assert fresh.loras.activate([AdapterRef("interior_b", 0.8)]).paths == (("interior_b", "loaded from disk"),)
    loaded = image(fresh)
    assert np.abs(swapped - loaded).max() <= 1, "in place or loaded fresh: the same image"
    assert np.abs(swapped - original).max() > 10

    back = one.loras.activate([AdapterRef("interior", 0.8)])
    assert back.paths == (("interior", "in-place from RAM"),), "the first adapter comes back from RAM"
    assert np.abs(image(one) - original).max() <= 1, "and draws exactly what it drew before"


def test_an_adapter_that_does_not_fit_replaces_the_evicted_one_by_a_normal_load(engines) -> None:
    one, fresh = engines
    one.loras.activate([AdapterRef("interior", 0.8)])
    # floorplan targets layers interior does not (proj_in/out, feed-forward): no in-place swap.
    report = one.loras.activate([AdapterRef("floorplan", 1.0)])
    assert report.paths[0][1].startswith("loaded from")
    assert one.loras.resident == ("floorplan",)
    fresh.loras.activate([AdapterRef("floorplan", 1.0)])
    assert np.abs(image(one) - image(fresh)).max() <= 1


def test_the_ram_cache_reads_a_replaced_file_again(engines, cache_dir: Path) -> None:
    one, _ = engines
    folder = one.settings.adapter_dir
    one.loras.activate([AdapterRef("interior_b", 0.8)])
    one.loras.activate([AdapterRef("interior", 0.8)])  # interior_b leaves the device, stays in RAM
    tensors = load_file(str(folder / "interior_b.safetensors"))
    save_file({k: v * 0.5 for k, v in tensors.items()}, str(folder / "interior_b.safetensors"))
    report = one.loras.activate([AdapterRef("interior_b", 0.8)])
    assert report.paths == (("interior_b", "in-place from disk"),), "changed on disk: read again"


def test_a_failed_load_after_making_room_puts_the_previous_adapter_back(engines) -> None:
    from spatiora_tui.engine.api import EngineError

    one, _ = engines
    one.loras.activate([AdapterRef("interior", 0.8)])
    before = image(one)
    folder = one.settings.adapter_dir
    # Parses as safetensors, but names layers this model does not have: fails only at injection,
    # after interior was taken off the device to make room.
    save_file(
        {
            "lora_unet_no_such_block_to_q.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_no_such_block_to_q.lora_up.weight": torch.zeros(32, 4),
        },
        str(folder / "alien.safetensors"),
    )
    try:
        with pytest.raises(EngineError, match="'alien'.*match no layer"):
            one.loras.activate([AdapterRef("alien", 1.0)])
    finally:
        (folder / "alien.safetensors").unlink()
    assert one.loras.resident == ("interior",) and [u.name for u in one.loras.active] == ["interior"]
    assert np.abs(image(one) - before).max() <= 1, "the next image is exactly as before the attempt"


def test_a_manager_is_freed_by_reference_counting_alone(tmp_path) -> None:
    # The engine freezes long-lived objects out of the cyclic collector (freeze_long_lived): a
    # manager in a reference cycle would keep its RAM tier for the life of the process.
    import gc
    import weakref

    from spatiora_tui.engine.adapters import LoraManager

    manager = LoraManager(None, "sd1", [tmp_path])
    manager.prefetch(["missing"])  # the prefetch thread and its reader come and go
    manager.wait_prefetch()
    gone = weakref.ref(manager)
    gc.disable()
    try:
        del manager
        assert gone() is None
    finally:
        gc.enable()
