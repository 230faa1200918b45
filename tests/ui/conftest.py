"""Fixtures for the UI tests: the app on a fake engine. Helpers are in tests/ui/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatiora_tui.config import Settings
from tests.fake_engine import FakeEngine
from tests.helpers import RANDOM_DEMO, small_tasks
from tests.ui.fakes import fake_telemetry


@pytest.fixture
def ui_settings(tmp_path: Path) -> Settings:
    return Settings(model=RANDOM_DEMO, tasks=small_tasks(), base_dir=tmp_path)


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
