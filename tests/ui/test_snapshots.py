"""Snapshots of the main screen and the history screen at a fixed size, renderer pinned to
half-cell blocks, live figures frozen (fake engine, recorded hardware readings).

Update with `pytest tests/ui/test_snapshots.py --snapshot-update` only after looking at the report.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from textual.widgets import Input

from spatiora_tui.config import Settings
from spatiora_tui.outputs import save_result
from spatiora_tui.ui.app import SpatioraApp
from spatiora_tui.ui.messages import HardwareSampled
from tests.fake_engine import FakeEngine
from tests.helpers import RANDOM_DEMO, small_tasks
from tests.ui.fakes import fake_telemetry
from tests.ui.helpers import settle

SIZE = (150, 42)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model=RANDOM_DEMO, tasks=small_tasks(), base_dir=Path("/tmp"))


def test_main_screen_during_a_generation(snap_compare, settings: Settings) -> None:
    gate = threading.Event()
    telemetry = fake_telemetry(True)
    engine = FakeEngine(settings, gate=gate, telemetry=telemetry)
    app = SpatioraApp(settings, engine, renderer="halfcell", telemetry=telemetry)

    async def run_before(pilot) -> None:
        await settle(app, pilot)
        app.query_one("#prompt", Input).value = "a sunlit loft with oak floors"
        await pilot.press("ctrl+g")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await pilot.pause(0.3)  # samples taken before the stage began are drawn by now
        # A sample taken now, in the denoise stage, drawn at once: the pane then shows the stage
        # and the task's peaks whatever the sampler's timing (later samples are identical).
        app.frames.offer_sample(HardwareSampled(telemetry.sample()))
        app.frames.flush()
        # The sparkline redraws at most once a second, so what it last drew depended on timing
        # (one sample or several): draw it now, from at least two samples.
        app.frames.offer_sample(HardwareSampled(telemetry.sample()))
        app.frames.flush()
        app.hardware_pane.redraw_sparkline()
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        gate.set()


def test_history_screen(snap_compare, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The screen shows paths relative to the working folder: the same text on every run.
    monkeypatch.chdir(tmp_path)
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("SPATIORA_OUTPUT_DIR", str(outputs))
    from spatiora_tui.engine.api import GenerationRequest

    maker = FakeEngine(settings)
    maker.load()
    for i, (task, prompt) in enumerate([("floorplan", "two-bedroom flat"), ("interior", "reading nook")]):
        result = maker.generate(GenerationRequest(prompt=prompt, task=task, seed=100 + i))
        path = save_result(result, outputs, name=f"image-{i}-{task}")
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    app = SpatioraApp(settings, FakeEngine(settings), renderer="halfcell", telemetry=fake_telemetry(False))

    async def run_before(pilot) -> None:
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
