"""The shipped demo model draws what its tasks are for: loaded from config.toml as a user's
files are (an AUTOMATIC1111-layout checkpoint with its config folder, Kohya LoRAs), the floorplan
task draws plans and the interior task rooms, as the procedural scorer reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatiora_tui.engine.demo import TRAINED_ADAPTERS, TRAINED_CHECKPOINT, TRAINED_DIR
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_the_shipped_files_are_in_users_layouts_and_small() -> None:
    from spatiora_tui.library.identify import identify_checkpoint, identify_lora

    assert identify_checkpoint(TRAINED_CHECKPOINT).variant.family == "sd1"
    for task in ("interior", "floorplan"):
        lora = identify_lora(TRAINED_ADAPTERS / f"{task}.safetensors")
        assert lora.format == "kohya" and lora.family == "sd1"
        assert (TRAINED_ADAPTERS / f"{task}.adapter.toml").is_file()
    total = sum(p.stat().st_size for p in TRAINED_DIR.rglob("*") if p.is_file())
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB shipped"


def test_the_default_config_draws_plans_with_floorplan_and_rooms_with_interior(cache_dir: Path) -> None:
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.procedural import scorer

    settings = load_settings(REPO / "config.toml")
    assert settings.model.source == "demo"
    engine = LocalEngine(settings, cache_dir=cache_dir)
    model = engine.load()
    assert not model.random_weights and model.family == "sd1"
    judge = scorer.kind_model()
    prompt = "a three-room flat: living room with oak floor and blue walls, window on the left"
    for task, kind in (("floorplan", "plan"), ("interior", "room")):
        images = [engine.generate(GenerationRequest(prompt=prompt, task=task, seed=seed)).image for seed in range(4)]
        kinds: list[str] = [judge.kind(image) for image in images if image is not None]
        assert kinds.count(kind) >= 3, (task, kinds)
