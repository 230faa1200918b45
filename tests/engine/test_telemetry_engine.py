"""Telemetry with the real engine: the stages it marks on the demo model, and real CUDA memory
(skipped without a GPU) through NVML and torch's peak counters."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from spatiora_tui.hw import Telemetry
from spatiora_tui.units import MB


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_real_nvml_sees_this_process_allocate() -> None:
    import torch

    telemetry = Telemetry()
    before = telemetry.sample()
    assert before.gpu is not None and (before.gpu.memory_total_mb or 0) > 0, before.nvml_error
    with telemetry.stage("allocate", task="gpu-test"):
        block = torch.empty(512 * MB, dtype=torch.uint8, device="cuda")
        block.fill_(1)
        during = telemetry.sample()
        del block
    record = telemetry.records_since(0)[-1]
    assert during.gpu.process_memory_mb is not None and during.gpu.process_memory_mb >= 512
    assert record.peak_cuda_allocated_mb is not None and record.peak_cuda_allocated_mb >= 512  # exact: torch's
    assert record.peak_vram_mb is not None and record.peak_vram_mb >= 512


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_cuda_stage_peak_is_exact_for_a_short_spike() -> None:
    import torch

    telemetry = Telemetry()
    torch.zeros(1, device="cuda")  # CUDA initialised before the stage begins
    with telemetry.stage("spike"):
        spike = torch.empty(256 * MB, dtype=torch.uint8, device="cuda")
        del spike
    peak = telemetry.records_since(0)[-1].peak_cuda_allocated_mb
    assert peak is not None and peak >= 256


# -- the real engine on the demo model -------------------------------------------------------


def test_the_engine_marks_every_stage_and_the_metadata_keeps_them(demo_engine, tmp_path: Path) -> None:
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.outputs import SPATIORA_KEY, save_result

    telemetry = demo_engine.telemetry
    load = [r for r in telemetry.records_since(0) if r.stage == "load base"]
    assert load and load[0].task is None and load[0].ms > 0

    demo_engine.switch_task("base")
    result = demo_engine.generate(GenerationRequest(prompt="a hallway", task="floorplan", seed=3))
    assert [s.stage for s in result.stages] == ["adapter switch", "text encode", "denoise", "VAE decode"]
    assert all(s.task == "floorplan" and s.ms > 0 and s.peak_rss_mb > 0 for s in result.stages)
    assert result.memory.peak_rss_mb >= max(s.peak_rss_mb for s in result.stages)
    assert telemetry.current_stage is None and telemetry.task == "floorplan"
    by_stage = telemetry.peaks_by_stage("floorplan")
    assert {"adapter switch", "text encode", "denoise", "VAE decode"} <= set(by_stage)

    with telemetry.stage("save"):
        path = save_result(result, tmp_path)
    from PIL import Image

    with Image.open(path) as image:
        meta = json.loads(image.info[SPATIORA_KEY])
    assert [s["stage"] for s in meta["stages"]] == ["adapter switch", "text encode", "denoise", "VAE decode"]
    assert all(s["peak_rss_mb"] > 0 and s["ms"] > 0 for s in meta["stages"])
    assert telemetry.records_since(0)[-1].stage == "save"


def test_a_cancelled_generation_leaves_no_stage_open(demo_engine) -> None:
    from spatiora_tui.engine.api import GenerationRequest

    cancel = threading.Event()
    result = demo_engine.generate(
        GenerationRequest(prompt="x", task="interior", seed=1), on_step=lambda preview: cancel.set(), cancel=cancel
    )
    assert result.cancelled
    assert demo_engine.telemetry.depth == 0
    assert "VAE decode" not in [s.stage for s in result.stages]


def test_a_failed_switch_keeps_the_task_in_force(demo_engine) -> None:
    import dataclasses

    from spatiora_tui.config import AdapterRef, TaskSettings
    from spatiora_tui.engine.api import EngineError

    demo_engine.switch_task("interior")
    settings = demo_engine.settings
    broken = TaskSettings(name="broken", adapters=(AdapterRef("no-such-adapter", 1.0),))
    demo_engine._settings = dataclasses.replace(settings, tasks=(*settings.tasks, broken))
    try:
        with pytest.raises(EngineError):
            demo_engine.switch_task("broken")
    finally:
        demo_engine._settings = settings
    assert demo_engine.telemetry.task == "interior" and demo_engine.telemetry.depth == 0


def test_memory_drift_after_a_generation_is_reported(demo_engine) -> None:
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.hw.watchdog import MemoryReading

    # An engine's first image takes the baseline instead of being checked (its one-time costs
    # stay): make it here, so the test does not depend on which tests ran before it.
    demo_engine.generate(GenerationRequest(prompt="x", task="interior", seed=1))
    baseline = demo_engine.watchdog.baseline
    demo_engine.watchdog.set_baseline(MemoryReading(rss_mb=1.0))  # as if the model had loaded into 1 MB
    try:
        result = demo_engine.generate(GenerationRequest(prompt="x", task="interior", seed=1))
    finally:
        demo_engine.watchdog.set_baseline(baseline)
    assert any("after generating" in w and "above the baseline" in w for w in result.warnings)
    clean = demo_engine.generate(GenerationRequest(prompt="x", task="interior", seed=1))
    assert not any("above the baseline" in w for w in clean.warnings)


# -- on a GPU ------------------------------------------------------------------------------------
