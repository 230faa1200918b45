"""[adapters] overlap_steps: a switch that must read an adapter from disk starts denoising with
what is in memory while the file is read, and puts it in after K steps (SwiftDiffusion's bounded
asynchronous LoRA loading). The image differs from the sequential one only through those first
steps; the task is whole from then on, and the next image is exactly the sequential one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spatiora_tui.config import AdapterSettings
from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.notices import NoticeKind, of_kind
from tests.helpers import small_settings


def make(cache_dir: Path, root: Path, overlap: int):
    from spatiora_tui.engine.local import LocalEngine

    (root / "adapters").mkdir(parents=True, exist_ok=True)
    engine = LocalEngine(small_settings(root, adapters=AdapterSettings(overlap_steps=overlap)), cache_dir=cache_dir)
    engine.load()
    return engine


def image(engine, task: str, seed: int = 3, timings: list | None = None):
    result = engine.generate(GenerationRequest(prompt="a flat", task=task, seed=seed))
    if timings is not None:
        timings.append(result.timings)
    return np.asarray(result.image, dtype=np.int16), result.warnings


@pytest.fixture(scope="module")
def sequential(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return make(cache_dir, tmp_path_factory.mktemp("sequential"), 0)


def test_an_adapter_from_disk_comes_in_after_k_steps(cache_dir: Path, tmp_path: Path, sequential) -> None:
    engine = make(cache_dir, tmp_path, 2)
    timings: list = []
    got, warnings = image(engine, "floorplan", timings=timings)
    notes = of_kind(warnings, NoticeKind.OVERLAP)
    assert len(notes) == 1 and "floorplan read from disk while the first 2 step(s) ran without it" in notes[0]
    assert timings[0].late_patch_ms is not None and timings[0].late_patch_ms > 0  # the wait, as a figure
    assert f"the loop waited {timings[0].late_patch_ms:.0f} ms" in notes[0]
    want, plain = image(sequential, "floorplan")
    assert not of_kind(plain, NoticeKind.OVERLAP)
    assert not np.array_equal(got, want)  # two steps without the adapter show
    assert engine.active_task == "floorplan" and [u.name for u in engine.loras.active] == ["floorplan"]
    again, warnings = image(engine, "floorplan", timings=timings)  # resident now: no overlap, the sequential image
    assert not of_kind(warnings, NoticeKind.OVERLAP) and timings[1].late_patch_ms is None
    assert np.array_equal(again, want)


def test_k_past_the_last_step_leaves_the_adapter_out_of_that_image_only(
    cache_dir: Path, tmp_path: Path, sequential
) -> None:
    engine = make(cache_dir, tmp_path, 50)  # the tasks have 4 steps
    got, warnings = image(engine, "interior")
    assert "first 50 step(s)" in of_kind(warnings, NoticeKind.OVERLAP)[0]
    assert not np.array_equal(got, image(sequential, "interior")[0])
    assert [u.name for u in engine.loras.active] == ["interior"]
    assert np.array_equal(image(engine, "interior")[0], image(sequential, "interior")[0])


def test_nothing_to_read_means_no_overlap(cache_dir: Path, tmp_path: Path) -> None:
    engine = make(cache_dir, tmp_path, 2)
    engine.switch_task("floorplan")  # read now
    engine.switch_task("base")
    assert not of_kind(image(engine, "floorplan")[1], NoticeKind.OVERLAP)  # resident: a plain switch
