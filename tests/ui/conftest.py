from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from spatiora_tui.config import Settings
from tests.conftest import small_tasks
from tests.ui.fakes import FakeEngine, fake_telemetry


def status(app) -> str:
    """The status line's text."""
    from textual.widgets import Static

    return str(app.query_one("#status", Static).render())


def outputs() -> list[Path]:
    """The PNGs in the output folder the test environment points at."""
    folder = Path(os.environ["SPATIORA_OUTPUT_DIR"])
    return sorted(folder.glob("*.png")) if folder.exists() else []


async def settle(app, pilot) -> None:
    """Wait until every worker but the endless hardware sampler is done, then for the UI."""
    await pilot.pause()
    while True:
        busy = [w for w in app.workers if w.group != "hardware" and w.is_running]
        if not busy:
            break
        await app.workers.wait_for_complete(busy)
        await pilot.pause()
    await pilot.pause()


@pytest.fixture
def ui_settings(tmp_path: Path) -> Settings:
    return Settings(tasks=small_tasks(), base_dir=tmp_path)


@pytest.fixture
def make(ui_settings: Settings):
    """make(**engine_kwargs, settings=None, gpu=False, renderer='unicode') -> (app, engine)."""
    from spatiora_tui.ui.app import SpatioraApp

    def build(settings: Settings | None = None, gpu: bool = False, renderer: str = "unicode", **engine_kwargs):
        settings = settings or ui_settings
        telemetry = fake_telemetry(gpu)
        engine = FakeEngine(settings, telemetry=telemetry, **engine_kwargs)
        return SpatioraApp(settings, engine, renderer=renderer, telemetry=telemetry), engine

    return build


def with_ui(settings: Settings, **changes) -> Settings:
    return dataclasses.replace(settings, ui=dataclasses.replace(settings.ui, **changes))
