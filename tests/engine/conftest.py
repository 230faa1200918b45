"""Tiny checkpoints of every family, written once per session in the AUTOMATIC1111 layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spatiora_tui.config import ModelSettings, PathSettings, Settings, TaskSettings

FAMILIES = (("sd1", False), ("sd2", False), ("sdxl", False), ("sd1", True), ("sdxl", True))


@dataclasses.dataclass(frozen=True)
class Tiny:
    family: str
    inpaint: bool
    path: Path
    config: Path
    pipe: object  # the pipeline the file was written from (do not load adapters into it)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    from tests.tiny_models import write_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for family, inpaint in FAMILIES:
        key = f"{family}{'-inpaint' if inpaint else ''}"
        path, config, pipe = write_checkpoint(root / key, family, inpaint)
        made[key] = Tiny(family, inpaint, path, config, pipe)
    return made


def tiny_settings(model: Tiny, root: Path, **paths: tuple[str, ...]) -> Settings:
    """Settings that load `model` as a user's single file, with 64 px, 2-step tasks."""
    tasks = (TaskSettings(name="plain", steps=2, width=64, height=64, scheduler="euler"),
             TaskSettings(name="neg", steps=2, width=64, height=64, scheduler="euler",
                          negative_prompt="badhands, blurry"))
    return Settings(model=ModelSettings(source=str(model.path), config=str(model.config), device="cpu"),
                    paths=PathSettings(**paths), tasks=tasks, base_dir=root)
