"""The app on the real engine and the demo model: generate end to end, previews arrive, the image
is saved with metadata, and switching task changes the active adapters."""

from __future__ import annotations

import os
from pathlib import Path

from textual.widgets import Input

from spatiora_tui.config import Settings
from spatiora_tui.outputs import read_metadata
from spatiora_tui.ui.app import make_app
from spatiora_tui.ui.messages import StepPreviewReady
from tests.conftest import small_tasks
from tests.ui.conftest import settle
from tests.ui.fakes import fake_telemetry


async def test_generate_switch_generate_on_the_demo_model(cache_dir: Path, tmp_path: Path) -> None:
    from spatiora_tui.engine.local import LocalEngine

    settings = Settings(tasks=small_tasks(), base_dir=tmp_path)
    telemetry = fake_telemetry(False)
    engine = LocalEngine(settings, cache_dir=cache_dir, telemetry=telemetry)
    app = make_app(settings, engine, renderer="halfcell", telemetry=telemetry)
    seen: list[object] = []
    async with app.run_test(size=(160, 48), message_hook=seen.append) as pilot:
        await settle(app, pilot)
        assert engine.model is not None and engine.active_task == "interior"
        assert [a.name for a in engine.loras.active] == ["interior"]

        app.query_one("#prompt", Input).value = "an open-plan flat"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert [m.preview.step for m in seen if isinstance(m, StepPreviewReady)][-1] == 4

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
