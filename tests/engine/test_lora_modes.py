"""Switch events, prefetch, fused mode, manifests, Kohya text-encoder parts and the leak watchdog."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spatiora_tui.config import AdapterRef, AdapterSettings, TaskSettings
from spatiora_tui.engine.api import EngineError, GenerationRequest
from tests.helpers import small_settings, small_tasks


def demo_adapter(cache_dir: Path, name: str) -> Path:
    return cache_dir / "demo-v1" / "adapters" / f"{name}.safetensors"


def make_engine(cache_dir: Path, root: Path, tasks: tuple[TaskSettings, ...] = (), **adapter_settings: Any):
    from spatiora_tui.engine.local import LocalEngine

    (root / "adapters").mkdir(parents=True, exist_ok=True)
    tasks = tasks or (
        *small_tasks(),
        TaskSettings(
            name="both",
            adapters=(AdapterRef("interior", 0.6), AdapterRef("floorplan", 0.5)),
            steps=4,
            width=64,
            height=64,
        ),
    )
    settings = small_settings(root, tasks=tasks, adapters=AdapterSettings(**adapter_settings))
    engine = LocalEngine(settings, cache_dir=cache_dir)
    engine.load()
    return engine


def image(engine, seed: int = 4) -> np.ndarray:
    result = engine.generate(GenerationRequest(prompt="p", task=engine.active_task, seed=seed))
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def plain(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return make_engine(cache_dir, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def fused(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, plain):
    return make_engine(cache_dir, tmp_path_factory.mktemp("fused"), fuse=True)


# -- switch events ----------------------------------------------------------------------------


def test_each_switch_reports_its_tiers_phases_and_memory(cache_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(cache_dir, tmp_path, resident_max=1)
    cold = engine.switch_task("interior")
    assert cold.tiers == (("interior", "disk"),)
    phases = dict(cold.phases_ms)
    assert list(phases) == ["read", "parse", "to device", "inject", "activate"]
    assert all(ms >= 0 for ms in phases.values()) and phases["inject"] > 0
    assert cold.rss_before_mb and cold.rss_after_mb and cold.vram_before_mb is None  # no CUDA here
    assert cold.warning is None

    again = engine.switch_task("interior")
    assert again.tiers == (("interior", "active"),) and [p for p, _ in again.phases_ms] == ["activate"]

    engine.switch_task("floorplan")  # resident_max=1: interior leaves the device, stays in RAM
    back = engine.switch_task("interior")
    assert back.tiers == (("interior", "RAM"),)
    assert "read" not in dict(back.phases_ms), "nothing read from disk"
    # The demo adapters target different layers, so interior cannot take floorplan's in place.
    assert back.paths == (("interior", "loaded from RAM"),)
    assert "inject" in dict(back.phases_ms) and "copy" not in dict(back.phases_ms)
    assert "from RAM" in back.summary() and back.summary().startswith("switched in ")


def test_prefetch_reads_ahead_so_the_switch_does_not_touch_the_disk(cache_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(cache_dir, tmp_path)
    engine.switch_task("interior")
    engine.prefetch("floorplan")
    engine.loras.wait_prefetch()
    switch = engine.switch_task("floorplan")
    assert switch.tiers == (("floorplan", "RAM (prefetched)"),)
    assert switch.loaded_from_disk == () and "read" not in dict(switch.phases_ms)
    engine.prefetch("floorplan")  # resident now: nothing to read
    assert not engine.loras.ram.pending
    engine.prefetch("no-such-task")  # unknown tasks are ignored, not an error


def test_a_failed_prefetch_leaves_the_error_to_the_switch(cache_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(cache_dir, tmp_path)
    (engine.settings.adapter_dir / "floorplan.safetensors").write_bytes(b"garbage")
    engine.switch_task("interior")
    engine.prefetch("floorplan")
    engine.loras.wait_prefetch()
    with pytest.raises(EngineError, match="'floorplan'.*not a valid .safetensors"):
        engine.switch_task("floorplan")
    assert engine.active_task == "interior"


def test_the_resident_mb_limit_takes_least_recently_used_adapters_off(cache_dir: Path, tmp_path: Path) -> None:
    sizes = [demo_adapter(cache_dir, name).stat().st_size / 2**20 for name in ("interior", "floorplan")]
    limit = max(max(sizes), 0.9 * sum(sizes))  # room for either alone, not for both
    engine = make_engine(cache_dir, tmp_path, resident_max=8, resident_mb=limit)
    for name in ("a",):  # an adapter that fits no slot (rank 16 > 8), larger than the limit alone
        tensors = load_file(str(demo_adapter(cache_dir, "interior")))
        save_file(
            {k: torch.cat([v, v], dim=0 if ".lora_A." in k else 1).contiguous() for k, v in tensors.items()},
            str(engine.settings.adapter_dir / f"{name}.safetensors"),
        )
    engine.switch_task("interior")
    engine.switch_task("floorplan")
    assert engine.loras.resident == ("floorplan",), "both exceed the MB limit"
    report = engine.loras.activate([AdapterRef("a")])
    assert report.paths == (("a", "loaded from disk"),) and engine.loras.resident == ("a",)


# -- fused mode -------------------------------------------------------------------------------


def base_weights(engine) -> dict[str, torch.Tensor]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    weights = {}
    for component in ("unet", "text_encoder"):
        for name, module in getattr(engine.pipeline, component).named_modules():
            if isinstance(module, BaseTunerLayer):
                weights[f"{component}.{name}"] = module.get_base_layer().weight.detach().clone()
    return weights


def test_fused_images_match_unfused_ones(plain, fused) -> None:
    for task in ("interior", "both", "base"):
        plain.switch_task(task)
        switch = fused.switch_task(task)
        assert switch.fused == (task != "base")
        diff = np.abs(image(plain) - image(fused))
        assert diff.max() <= 2, f"{task}: fused differs from unfused by {diff.max()}"
    fused.switch_task("interior")
    plain.switch_task("base")
    assert np.abs(image(plain) - image(fused)).max() > 10, "fusing did change the weights"


def test_base_weights_are_exact_after_100_fuse_unfuse_cycles(fused) -> None:
    fused.switch_task("base")
    fused.switch_task("interior")
    fused.switch_task("base")
    original = base_weights(fused)
    assert original, "the LoRA layers are found"
    for i in range(100):
        report = fused.switch_task(("interior", "floorplan", "both")[i % 3])
        assert report.fused and "fuse" in dict(report.phases_ms)
        fused.switch_task("base")
    after = base_weights(fused)
    worst = max((after[k] - original[k]).abs().max().item() for k in original)
    assert worst == 0.0, f"max abs difference {worst}"


# -- manifests and trigger words --------------------------------------------------------------


def test_a_manifest_gives_the_default_weight_and_trigger_words(cache_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "adapters" / "interior"
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(demo_adapter(cache_dir, "interior").read_bytes())
    (folder / "adapter.toml").write_text(
        'base = "sd1.5"\ntrigger_words = ["spz_room", "Warm Light"]\ndefault_weight = 0.35\n'
        'description = "test interiors"\n'
    )
    task = TaskSettings(
        name="interior", adapters=(AdapterRef("interior"),), prompt_template="{prompt}", steps=2, width=64, height=64
    )
    engine = make_engine(cache_dir, tmp_path, tasks=(task,))
    switch = engine.switch_task("interior")
    assert switch.adapters == (("interior", 0.35),)
    manifest = engine.loras.manifest("interior")
    assert manifest.description == "test interiors" and manifest.base == "sd1"
    result = engine.generate(GenerationRequest(prompt="a warm light loft", task="interior", seed=1, steps=1))
    assert result.params.full_prompt == "spz_room, a warm light loft", "only the missing word is added"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('base = "sdxl"\n', ["'floorplan'", "made for SDXL", "SD 1.x", "adapter.toml"]),
        ("base = [\n", ["'floorplan'", "not valid TOML", "fix or delete"]),
        ('colour = "red"\n', ["'floorplan'", "unknown key", "colour", "allowed"]),
        ("default_weight = 9\n", ["'floorplan'", "default_weight", "-5 to 5"]),
    ],
)
def test_a_bad_or_mismatched_manifest_is_refused_and_nothing_changes(
    cache_dir: Path, tmp_path: Path, text: str, fragments: list[str]
) -> None:
    engine = make_engine(cache_dir, tmp_path)
    engine.switch_task("interior")
    before = image(engine)
    folder = engine.settings.adapter_dir / "floorplan"
    folder.mkdir()
    (folder / "floorplan.safetensors").write_bytes(demo_adapter(cache_dir, "floorplan").read_bytes())
    (folder / "adapter.toml").write_text(text)
    with pytest.raises(EngineError) as info:
        engine.switch_task("floorplan")
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"
    assert engine.active_task == "interior" and "floorplan" not in engine.loras.resident
    assert np.array_equal(image(engine), before)


# -- Kohya text-encoder parts -----------------------------------------------------------------


def write_kohya_te(folder: Path, name: str, projections: dict[str, tuple[int, int]]) -> None:
    """A Kohya/A1111 file with text-encoder parts only, for the demo's 2-layer CLIP (width 32)."""
    gen = torch.Generator().manual_seed(3)
    kohya = {}
    for layer in range(2):
        for proj, (fan_in, fan_out) in projections.items():
            base = f"lora_te_text_model_encoder_layers_{layer}_{proj}"
            kohya[f"{base}.lora_down.weight"] = torch.randn(4, fan_in, generator=gen)
            kohya[f"{base}.lora_up.weight"] = torch.randn(fan_out, 4, generator=gen) * 0.5
            kohya[f"{base}.alpha"] = torch.tensor(2.0)
    save_file(kohya, str(folder / f"{name}.safetensors"))


KOHYA_TE = {
    "self_attn_q_proj": (32, 32),
    "self_attn_k_proj": (32, 32),
    "self_attn_v_proj": (32, 32),
    "self_attn_out_proj": (32, 32),
    "mlp_fc1": (32, 64),
    "mlp_fc2": (64, 32),
}


def test_a_kohya_file_with_text_encoder_parts_loads_them(plain) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    write_kohya_te(plain.settings.adapter_dir, "kohya_te", KOHYA_TE)
    plain.switch_task("base")
    base_image = image(plain)
    report = plain.loras.activate([AdapterRef("kohya_te", 1.0)])
    try:
        assert report.paths == (("kohya_te", "loaded from disk"),)
        te_layers = [
            m for m in plain.pipeline.text_encoder.modules() if isinstance(m, BaseTunerLayer) and "kohya_te" in m.lora_A
        ]
        assert len(te_layers) == 12, "every projection of both layers"
        assert np.abs(image(plain) - base_image).max() > 10, "the text-encoder LoRA changes the output"
    finally:
        plain.switch_task("base")
        plain.loras.evict("kohya_te")
    assert np.array_equal(image(plain), base_image), "evicting it gives the base model back exactly"


def test_a_file_diffusers_would_apply_only_in_part_is_refused(plain) -> None:
    # Without out_proj, diffusers takes a Kohya text encoder for the newer layout and drops the
    # attention layers without a word; the manager counts what was applied.
    write_kohya_te(plain.settings.adapter_dir, "kohya_half", {"self_attn_q_proj": (32, 32), "mlp_fc1": (32, 64)})
    plain.switch_task("interior")
    before = image(plain)
    with pytest.raises(EngineError, match=r"'kohya_half'.*only 2 of its 4 LoRA layers"):
        plain.loras.activate([AdapterRef("kohya_half", 1.0)])
    assert "kohya_half" not in plain.loras.resident
    assert np.array_equal(image(plain), before)


# -- leak watchdog ----------------------------------------------------------------------------


def test_the_watchdog_warns_when_memory_stays_up_after_a_switch(cache_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(cache_dir, tmp_path, leak_tolerance_mb=64.0)
    assert engine.switch_task("interior").warning is None
    # Memory held across switches that no tier accounts for. An anonymous mapping, so that
    # freeing it gives it back to the kernel whatever earlier tests left in the C heap (a
    # bytearray may be carved out of a free heap chunk and stay resident after it is freed).
    leak = mmap.mmap(-1, 200 * 2**20)
    for page in range(0, len(leak), 4096):  # touch every page so it counts in RSS (no big temporary)
        leak[page] = 1
    switch = engine.switch_task("floorplan")
    assert switch.warning is not None
    assert "above the baseline" in switch.warning and "tolerance 64 MB" in switch.warning
    leak.close()
    assert engine.switch_task("interior").warning is None


def test_the_watchdog_counts_what_the_tiers_hold() -> None:
    from spatiora_tui.hw.watchdog import LeakWatchdog, MemoryReading

    dog = LeakWatchdog(tolerance_mb=10)
    dog.set_baseline(MemoryReading(rss_mb=1000.0, vram_mb=500.0))
    assert dog.check(MemoryReading(1100.0, 505.0), held_ram_mb=95.0) is None
    warning = dog.check(MemoryReading(1110.0, 505.0), held_ram_mb=95.0)
    assert warning is not None and "RAM 15 MB" in warning
    warning = dog.check(MemoryReading(1000.0, 700.0), held_vram_mb=100.0)
    assert warning is not None and "VRAM 100 MB" in warning and "RAM" not in warning.split("VRAM")[0]
    assert dog.check(MemoryReading(1000.0, None)) is None, "no CUDA reading: only RAM is checked"
