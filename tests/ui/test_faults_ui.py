"""Faults while the app runs, on the real engine and the demo model, made to happen through
failpoints: out of memory while denoising and while decoding, a full disk when saving, an
adapter file deleted under the app, the terminal resized mid-generation. Each time the user is
told what happened and what to do, nothing they made is lost, and the app goes on working."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from spatiora_tui import failpoints
from spatiora_tui.config import AdapterRef, Settings, TaskSettings
from spatiora_tui.outputs import read_metadata
from spatiora_tui.ui.app import SpatioraApp
from tests.helpers import RANDOM_DEMO, small_tasks
from tests.ui.fakes import fake_telemetry
from tests.ui.helpers import outputs, settle, status

SIZE = (160, 48)
saved_files = outputs


@pytest.fixture(scope="module")
def loaded(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One loaded engine for the module (the app's load worker then finds it ready)."""
    from spatiora_tui.engine.local import LocalEngine

    root = tmp_path_factory.mktemp("faults-ui")
    (root / "adapters").mkdir()
    extra = TaskSettings(
        name="plan2",
        adapters=(AdapterRef("plan2", 1.0),),
        prompt_template="{prompt}",
        steps=3,
        width=64,
        height=64,
        scheduler="euler",
    )
    settings = Settings(model=RANDOM_DEMO, tasks=(*small_tasks(), extra), base_dir=root)
    telemetry = fake_telemetry(False)
    engine = LocalEngine(settings, cache_dir=cache_dir, telemetry=telemetry)
    engine.load()
    return settings, engine, telemetry


async def generate(app, pilot, prompt: str = "a hall") -> None:
    app.query_one("#prompt", Input).value = prompt
    await pilot.press("ctrl+g")
    await settle(app, pilot)


@pytest.mark.parametrize(("point", "times", "stage"), [("denoise", 1, "denoise"), ("vae decode", 2, "VAE decode")])
async def test_out_of_memory_is_reported_and_the_next_generation_succeeds(
    loaded, point: str, times: int, stage: str
) -> None:
    settings, engine, telemetry = loaded
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        failpoints.arm(point, "oom", times=times)
        await generate(app, pilot, "first try")
        assert f"out of memory (job 1, interior): out of memory during {stage} at 64x64; memory was released" in status(
            app
        )
        assert "Lower width/height" in status(app)
        assert app.query_one("#prompt", Input).value == "first try", "the prompt is kept"
        assert saved_files() == []
        await generate(app, pilot, "first try")
        assert len(saved_files()) == 1 and f"saved {saved_files()[0]}" in status(app)


async def test_oom_in_decode_once_is_retried_in_tiles(loaded) -> None:
    settings, engine, telemetry = loaded
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        failpoints.arm("vae decode", "oom")
        await generate(app, pilot)
        [path] = saved_files()
        assert any("decoded in tiles" in w for w in read_metadata(path).spatiora["warnings"])


@pytest.mark.parametrize("action", ["enospc", "eacces"])
async def test_a_failed_save_keeps_the_image_and_ctrl_s_saves_it_again(loaded, action: str) -> None:
    settings, engine, telemetry = loaded
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.check_action("save", ()) is False, "no 'Save again' while nothing waits"
        failpoints.arm("save", action, times=2)
        await generate(app, pilot, "keep me")
        assert saved_files() == []
        words = "the disk is full" if action == "enospc" else "make the folder writable"
        assert "could not save the image" in status(app) and words in status(app)
        assert "ctrl+s saves it again" in str(app.query_one("#saved", Static).render())
        assert app.query_one("#preview-image").display is True and app.check_action("save", ()) is True
        await generate(app, pilot, "keep me too")  # a second image fails too: both are kept
        assert saved_files() == [] and len(app.session.unsaved) == 2
        await pilot.press("ctrl+q")  # quitting would lose them: the first ctrl+q only warns
        await pilot.pause()
        assert app.is_running and "2 image(s) are not saved" in status(app)
        failpoints.arm("save", action)
        await pilot.press("ctrl+s")  # the cause is not fixed yet: still kept
        await settle(app, pilot)
        assert "still not saved" in status(app) and app.check_action("save", ()) is True
        await pilot.press("ctrl+s")  # now it is
        await settle(app, pilot)
        paths = saved_files()
        assert len(paths) == 2 and "saved " in status(app) and "still waiting" not in status(app)
        assert app.check_action("save", ()) is False
        prompts = sorted(read_metadata(p).spatiora["request"]["prompt"] for p in paths)
        assert prompts == ["keep me", "keep me too"]
        await pilot.press("ctrl+s")  # nothing waits: the key is off, nothing is written twice
        await settle(app, pilot)
        assert saved_files() == paths


async def test_an_adapter_deleted_while_the_app_runs(loaded, tmp_path: Path) -> None:
    settings, engine, telemetry = loaded
    plan2 = settings.adapter_dir / "plan2.safetensors"
    shutil.copy(engine.loras.find("floorplan"), plan2)
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        active = engine.active_task
        plan2.unlink()
        app.request_switch("plan2")
        await settle(app, pilot)
        assert "could not switch to plan2: adapter 'plan2' not found" in status(app)
        assert "Put the file there, or remove it from the task" in status(app)
        assert engine.active_task == active, "the task that was active stays active"
        await generate(app, pilot)
        assert len(saved_files()) == 1, "and it still generates"


async def test_terminal_resized_mid_generation(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#prompt", Input).value = "x"
        await pilot.press("ctrl+g")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        for size in ((80, 24), (200, 60), (60, 20), SIZE):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert app.size == size
        gate.set()
        await settle(app, pilot)
        assert len(saved_files()) == 1 and "saved" in status(app)
        assert app.query_one("#preview-image").display is True


async def test_an_80x24_terminal_still_shows_the_preview_and_the_hardware(make) -> None:
    app, engine = make()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.query_one("#prompt", Input).value = "x"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        preview, hardware = app.query_one("#preview"), app.query_one("#hardware")
        assert app.screen.has_class("-narrow")
        assert preview.size.width >= 30 and preview.size.height >= 8, preview.size
        assert hardware.display and hardware.size.width >= 30 and hardware.size.height >= 5, hardware.size
        image = app.query_one("#preview-image")
        assert image.display and image.size.width >= 8, image.size
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        assert app.screen.has_class("-wide") and app.query_one("#hardware").size.height > 20


async def test_the_app_removes_temp_files_a_killed_writer_left(make) -> None:
    folder = Path(os.environ["SPATIORA_OUTPUT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / ".20261124-loft.png.999999999.partial"  # a pid no process has
    stale.write_bytes(b"half a png")
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert not stale.exists()
