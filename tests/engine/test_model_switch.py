"""Replacing the base model: the old one is freed entirely, adapters are re-checked, a bad file
changes nothing, a failed load brings the previous model back, a task can bring its own model."""

from __future__ import annotations

import dataclasses
import gc
import shutil
import weakref
from pathlib import Path

import pytest

from spatiora_tui.config import AdapterRef, TaskSettings
from spatiora_tui.engine.api import EngineError, GenerationRequest
from tests import fake_files, lora_files
from tests.engine.helpers import tiny_settings


@pytest.fixture
def sd1_engine(tiny, tmp_path: Path):
    from spatiora_tui.engine.local import LocalEngine

    sd1 = tiny["sd1"]
    lora_files.write_kohya(
        sd1.pipe, tmp_path / "loras" / "oak.safetensors", seed=2, metadata={"ss_base_model_version": "sd_v1"}
    )
    settings = tiny_settings(sd1, tmp_path, loras=(str(tmp_path / "loras"),))
    tasks = (
        *settings.tasks,
        TaskSettings(name="oak", adapters=(AdapterRef("oak", 0.7),), steps=2, width=64, height=64, scheduler="euler"),
    )
    engine = LocalEngine(dataclasses.replace(settings, tasks=tasks), cache_dir=tmp_path / "cache")
    engine.load()
    return engine


def test_switching_frees_the_old_pipeline_and_rechecks_the_adapters(sd1_engine, tiny) -> None:
    sd1_engine.switch_task("oak")
    sd1_engine.generate(GenerationRequest(prompt="a room", task="oak", seed=1))
    old = weakref.ref(sd1_engine.pipeline.unet)
    switch = sd1_engine.switch_model(str(tiny["sdxl"].path))
    gc.collect()
    assert old() is None, "nothing holds the previous base model"
    assert switch.model.family == "sdxl" and switch.previous == str(tiny["sd1"].path)
    assert switch.notes == ("task 'oak': adapter 'oak' is for SD 1.x, the base model is now SDXL",)
    assert switch.duration_ms > 0 and switch.rss_before_mb and switch.rss_after_mb
    with pytest.raises(EngineError, match="targets SD 1.x .* but the base model is SDXL"):
        sd1_engine.switch_task("oak")
    result = sd1_engine.generate(GenerationRequest(prompt="a room", task="plain", seed=1))
    assert result.model.family == "sdxl" and result.image is not None


def test_a_file_that_is_no_checkpoint_is_refused_before_anything_is_freed(sd1_engine, tmp_path: Path) -> None:
    pipe = sd1_engine.pipeline
    lora = tmp_path / "loras" / "oak.safetensors"
    with pytest.raises(EngineError, match="oak.safetensors is a LoRA, not a Stable Diffusion checkpoint"):
        sd1_engine.switch_model(str(lora))
    flux = fake_files.write(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": (9, 3)})
    with pytest.raises(EngineError, match="is a Flux model"):
        sd1_engine.switch_model(str(flux))
    assert sd1_engine.pipeline is pipe, "the loaded model was not touched"


def test_a_load_that_fails_after_freeing_brings_the_previous_model_back(sd1_engine, tiny, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from spatiora_tui.engine.ldm_layout import pipeline_to_ldm

    tensors = {
        k: v.contiguous()
        for k, v in pipeline_to_ldm(tiny["sd1"].pipe).items()
        if "mid_block" not in k and "middle_block" not in k
    }
    broken = tmp_path / "incomplete.safetensors"
    save_file(tensors, str(broken))
    shutil.copytree(tiny["sd1"].config, tmp_path / "incomplete.config")
    with pytest.raises(
        EngineError, match=r"incomplete lacks weights the architecture needs.*\(tiny-sd1 was loaded again\)"
    ):
        sd1_engine.switch_model(str(broken))
    assert sd1_engine.model.name == "tiny-sd1"
    assert sd1_engine.generate(GenerationRequest(prompt="a room", task="plain", seed=1)).image is not None


def test_within_a_family_the_adapter_ram_cache_is_kept(sd1_engine, tiny, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from spatiora_tui.engine.ldm_layout import pipeline_to_ldm
    from tests.tiny_models import tiny_pipeline

    sd1_engine.switch_task("oak")  # read from disk into RAM
    twin = tmp_path / "twin.safetensors"  # another SD 1.x checkpoint of the same architecture
    save_file({k: v.contiguous() for k, v in pipeline_to_ldm(tiny_pipeline("sd1", seed=9)).items()}, str(twin))
    shutil.copytree(tiny["sd1"].config, tmp_path / "twin.config")
    sd1_engine.switch_model(str(twin))
    switch = sd1_engine.switch_task("oak")
    assert switch.tiers == (("oak", "RAM"),), "the parsed adapter came over with the model switch"


def test_a_task_with_its_own_model_loads_it_on_switch(sd1_engine, tiny) -> None:
    xl = TaskSettings(name="xl", steps=2, width=64, height=64, scheduler="euler", model=str(tiny["sdxl"].path))
    sd1_engine._settings = dataclasses.replace(sd1_engine.settings, tasks=(*sd1_engine.settings.tasks, xl))
    switch = sd1_engine.switch_task("xl", on_progress=lambda text: None)
    assert switch.model_switch is not None and switch.model_switch.model.family == "sdxl"
    assert sd1_engine.switch_task("xl").model_switch is None, "already loaded: nothing to do"
    back = sd1_engine.switch_task("plain")
    assert back.model_switch is None, "a task without its own model runs on whatever is loaded"
    assert sd1_engine.generate(GenerationRequest(prompt="p", task="xl", seed=1)).model.family == "sdxl"


def test_a_checkpoint_of_another_size_says_how_to_describe_it(sd1_engine, tiny, tmp_path: Path) -> None:
    # A tiny SD 1.x file without its own config folder meets the shipped full-size architecture.
    shutil.copy(tiny["sd1"].path, tmp_path / "odd.safetensors")
    with pytest.raises(EngineError, match=r"odd: its tensors do not fit the architecture .* odd.config/"):
        sd1_engine.switch_model(str(tmp_path / "odd.safetensors"))
    assert sd1_engine.model.name == "tiny-sd1"


def test_a_first_task_with_its_own_model_is_loaded_directly(tiny, tmp_path: Path) -> None:
    from spatiora_tui.engine.local import LocalEngine

    settings = tiny_settings(tiny["sd1"], tmp_path)
    xl = TaskSettings(name="xl", steps=2, width=64, height=64, scheduler="euler", model=str(tiny["sdxl"].path))
    engine = LocalEngine(dataclasses.replace(settings, tasks=(xl, *settings.tasks)), cache_dir=tmp_path / "cache")
    loaded: list[str] = []
    engine.load(on_progress=loaded.append, source=xl.model)
    assert engine.model.family == "sdxl" and not any("tiny-sd1" in text for text in loaded)
    assert engine.switch_task("xl").model_switch is None
