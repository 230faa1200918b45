"""The app on the real engine and the demo model: generate end to end, previews arrive, the image
is saved with metadata, and switching task changes the active adapters."""

from __future__ import annotations

import os
from pathlib import Path

from textual.widgets import Input

from spatiora_tui.config import Settings
from spatiora_tui.jobs.events import JobStepped
from spatiora_tui.outputs import read_metadata
from spatiora_tui.ui.app import SpatioraApp
from tests.helpers import RANDOM_DEMO, small_tasks
from tests.ui.fakes import fake_telemetry
from tests.ui.helpers import news, settle


async def test_generate_switch_generate_on_the_demo_model(cache_dir: Path, tmp_path: Path) -> None:
    from spatiora_tui.engine.local import LocalEngine

    settings = Settings(model=RANDOM_DEMO, tasks=small_tasks(), base_dir=tmp_path)
    telemetry = fake_telemetry(False)
    engine = LocalEngine(settings, cache_dir=cache_dir, telemetry=telemetry)
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    seen: list[object] = []
    async with app.run_test(size=(160, 48), message_hook=seen.append) as pilot:
        await settle(app, pilot)
        assert engine.model is not None and engine.active_task == "interior"
        assert [a.name for a in engine.loras.active] == ["interior"]

        app.query_one("#prompt", Input).value = "an open-plan flat"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert [m.preview.step for m in news(seen, JobStepped)][-1] == 4

        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert engine.active_task == "floorplan" and [a.name for a in engine.loras.active] == ["floorplan"]
        await pilot.press("ctrl+g")
        await settle(app, pilot)

    files = sorted(Path(os.environ["SPATIORA_OUTPUT_DIR"]).glob("*.png"))
    tasks = sorted(read_metadata(f).spatiora["request"]["task"] for f in files)
    assert tasks == ["floorplan", "interior"]
    for f in files:
        meta = read_metadata(f)
        assert meta.spatiora["model"]["random_weights"] is True
        assert meta.a1111["fields"]["Lora hashes"].startswith(meta.spatiora["request"]["task"])


async def test_an_a1111_install_single_files_a_lora_tag_and_ctrl_l(tiny, tmp_path: Path) -> None:
    """The user's own files in the app: a tiny A1111-layout SD 1.x file from an install, a
    <lora:...> tag and a negative embedding by name, then ctrl+l to the SDXL file and again."""
    import dataclasses
    import shutil

    import torch
    from safetensors.torch import save_file
    from textual.widgets import OptionList

    from spatiora_tui.config import ModelSettings, PathSettings
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.ui.screens.models import ModelPicker
    from tests import lora_files

    webui = tmp_path / "webui"
    for key in ("sd1", "sdxl"):
        models = webui / "models" / "Stable-diffusion"
        models.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny[key].path, models)
        shutil.copytree(tiny[key].config, models / tiny[key].config.name)
    lora_files.write_kohya(tiny["sd1"].pipe, webui / "models" / "Lora" / "oak.safetensors", seed=4)
    (webui / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, str(webui / "embeddings" / "easyneg.safetensors"))
    save_file(
        {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 40)}, str(webui / "embeddings" / "negxl.safetensors")
    )
    lora_files.write_kohya(tiny["sdxl"].pipe, webui / "models" / "Lora" / "oakxl.safetensors", seed=5)
    tasks = tuple(dataclasses.replace(t, negative_prompt="easyneg, blurry", adapters=()) for t in small_tasks())
    settings = Settings(
        model=ModelSettings(source="tiny-sd1"),
        paths=PathSettings(installs=(str(webui),)),
        tasks=tasks,
        base_dir=tmp_path,
    )
    telemetry = fake_telemetry(False)
    engine = LocalEngine(settings, cache_dir=tmp_path / "cache", telemetry=telemetry)
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        assert app.sub_title.startswith("tiny-sd1 · SD 1.x")
        app.query_one("#prompt", Input).value = "a loft <lora:oak:0.7>"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert isinstance(app.screen, ModelPicker)
        options = app.screen.query_one(OptionList)
        names = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        options.highlighted = next(i for i, text in enumerate(names) if "tiny-sdxl" in text)
        await pilot.press("enter")
        await settle(app, pilot)
        assert engine.model.family == "sdxl" and app.sub_title.startswith("tiny-sdxl · SDXL")
        app.query_one("#prompt", Input).value = "a loft"
        await pilot.press("ctrl+g")  # easyneg is an SD 1.x embedding: refused by name on SDXL
        await settle(app, pilot)
        assert "embedding 'easyneg'" in str(app.query_one("#status").render())
        app.query_one("#negative", Input).value = "negxl, blurry"
        app.query_one("#prompt", Input).value = "a loft <lora:oakxl:0.6>"
        await pilot.press("ctrl+g")
        await settle(app, pilot)

    files = sorted(Path(os.environ["SPATIORA_OUTPUT_DIR"]).glob("*.png"))
    assert len(files) == 2
    metas = sorted((read_metadata(f) for f in files), key=lambda m: m.a1111["fields"]["Model"])
    for meta, model, lora, embedding in zip(metas, ("tiny-sd1", "tiny-sdxl"), ("oak", "oakxl"), ("easyneg", "negxl")):
        assert meta.a1111["fields"]["Model"] == model and len(meta.a1111["fields"]["Model hash"]) == 10
        assert list(meta.a1111["lora_hashes"]) == [lora] and list(meta.a1111["ti_hashes"]) == [embedding]
