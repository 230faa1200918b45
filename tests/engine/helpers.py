"""Settings for engines on the tiny single-file checkpoints (the `tiny` fixture: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from spatiora_tui.config import ModelSettings, PathSettings, Settings, TaskSettings
from tests.helpers import Tiny


def tiny_settings(model: Tiny, root: Path, **paths: tuple[str, ...]) -> Settings:
    """Settings that load `model` as a user's single file, with 64 px, 2-step tasks."""
    tasks = (
        TaskSettings(name="plain", steps=2, width=64, height=64, scheduler="euler"),
        TaskSettings(name="neg", steps=2, width=64, height=64, scheduler="euler", negative_prompt="badhands, blurry"),
    )
    return Settings(
        model=ModelSettings(source=str(model.path), config=str(model.config), device="cpu"),
        paths=PathSettings(**paths),
        tasks=tasks,
        base_dir=root,
    )
