"""[model] compile: adapters in fixed lanes, so that switching tasks, swapping adapters in place
and changing weights never trace the UNet again (Dynamo's own counter of compiled graphs), the
images those switches give are the uncompiled engine's, and a set that does not fit the lanes
runs uncompiled with a reason and hands back to the compiled UNet without a trace.

Dynamo runs with the eager backend here (SPATIORA_COMPILE_BACKEND=eager): tracing, guards and
recompiles are the same as with inductor, without generating kernels on a 2-core CPU. The GPU
check runs inductor (benchmarks/gpu_check.py, section compile)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spatiora_tui.config import AdapterRef, AdapterSettings, ModelSettings, TaskSettings
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.engine.compiled import graphs
from spatiora_tui.notices import NoticeKind, of_kind
from tests.helpers import small_settings, small_tasks
from tests.lora_files import write_kohya

COMMON: dict[str, Any] = dict(steps=3, guidance=7.0, width=64, height=64, scheduler="euler")


def tasks() -> tuple[TaskSettings, ...]:
    return (
        *small_tasks(),
        TaskSettings(name="both", adapters=(AdapterRef("interior", 0.6), AdapterRef("floorplan", 0.5)), **COMMON),
        TaskSettings(name="locon", adapters=(AdapterRef("locon", 0.7),), **COMMON),
        TaskSettings(name="wide", adapters=(AdapterRef("wide", 0.7),), **COMMON),
        TaskSettings(name="text", adapters=(AdapterRef("text", 0.9),), **COMMON),
    )


@pytest.fixture(scope="module")
def adapter_root(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adapters in users' layouts: a LoCon (convolutions outside the lanes), a rank-16 Kohya
    file (over compile_rank = 8) and a Kohya file with text-encoder parts."""
    from spatiora_tui.engine.local import LocalEngine

    root = tmp_path_factory.mktemp("compile")
    folder = root / "adapters"
    engine = LocalEngine(small_settings(root), cache_dir=cache_dir)
    engine.load()
    pipe = engine.pipeline
    write_kohya(pipe, folder / "locon.safetensors", conv=True, seed=1)
    write_kohya(pipe, folder / "wide.safetensors", rank=16, seed=2)
    write_kohya(pipe, folder / "text.safetensors", components=("unet", "text_encoder"), varying_alphas=True, seed=3)
    return root


def make(cache_dir: Path, root: Path, compile: bool, rank: int = 8, **adapters: Any):
    from spatiora_tui.engine.local import LocalEngine

    model = ModelSettings(source="demo-random", compile=compile, compile_rank=rank)
    settings = small_settings(root, tasks=tasks(), model=model, adapters=AdapterSettings(**adapters))
    engine = LocalEngine(settings, cache_dir=cache_dir)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def eager_backend() -> Iterator[None]:
    import torch._dynamo

    patch = pytest.MonkeyPatch()
    patch.setenv("SPATIORA_COMPILE_BACKEND", "eager")
    yield
    patch.undo()
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def plain(cache_dir: Path, adapter_root: Path):
    return make(cache_dir, adapter_root, compile=False)


@pytest.fixture(scope="module")
def compiled(cache_dir: Path, adapter_root: Path, eager_backend: None):
    return make(cache_dir, adapter_root, compile=True)


def image(engine, task: str, prompt: str = "a room", seed: int = 7) -> tuple[np.ndarray, tuple[str, ...]]:
    result = engine.generate(GenerationRequest(prompt=prompt, task=task, seed=seed))
    return np.asarray(result.image, dtype=np.int16), result.warnings


def test_the_first_image_compiles_and_says_so_then_none_does(compiled) -> None:
    first = image(compiled, "base")[1]
    assert of_kind(first, NoticeKind.COMPILE), first
    assert compiled.model.compiled == "eager backend"
    before = graphs()
    assert not of_kind(image(compiled, "base")[1], NoticeKind.COMPILE)
    assert graphs() == before


def test_switching_tasks_and_weights_traces_nothing_again(compiled, plain) -> None:
    image(compiled, "base")  # traced for this size
    before = graphs()
    for task in ("interior", "floorplan", "both", "base", "interior", "both", "text", "floorplan"):
        switch = compiled.switch_task(task)
        assert not switch.uncompiled, switch.uncompiled
        got = image(compiled, task)[0]
        want = image(plain, task)[0]
        assert np.abs(got - want).max() <= 1, task  # the lanes' zero padding sums in another order
    weighted = image(compiled, "interior", "a room <lora:floorplan:0.3>")  # a tag's weight, in a lane
    assert not of_kind(weighted[1], NoticeKind.COMPILE)
    assert np.abs(weighted[0] - image(plain, "interior", "a room <lora:floorplan:0.3>")[0]).max() <= 1
    assert graphs() == before


def test_the_base_task_is_the_exact_base_model(compiled, plain) -> None:
    compiled.switch_task("interior")
    image(compiled, "interior")
    assert np.array_equal(image(compiled, "base")[0], image(plain, "base")[0])  # lanes at scale 0 add nothing


def test_in_place_swaps_from_ram_trace_nothing(cache_dir: Path, adapter_root: Path, eager_backend: None, plain) -> None:
    engine = make(cache_dir, adapter_root, compile=True, resident_max=1)
    engine.switch_task("floorplan")  # read from disk once; each switch below comes from RAM
    image(engine, "interior")
    before = graphs()
    for task in ("floorplan", "interior", "floorplan"):
        switch = engine.switch_task(task)
        assert switch.paths == ((task, "in-place from RAM"),)
        assert np.abs(image(engine, task)[0] - image(plain, task)[0]).max() <= 1
    assert graphs() == before
    assert engine.loras.resident == ("floorplan",)


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ("locon", "targets layers outside the compiled set (unet"),
        ("wide", "its rank 16 is over the lanes' 8 ([model] compile_rank)"),
    ],
)
def test_a_set_that_does_not_fit_runs_uncompiled_and_hands_back(compiled, plain, task: str, why: str) -> None:
    image(compiled, "interior")
    before = graphs()
    switch = compiled.switch_task(task)
    assert why in switch.uncompiled
    assert f"runs uncompiled: adapter {task!r} does not fit the compiled layout" in switch.summary()
    assert np.array_equal(image(compiled, task)[0], image(plain, task)[0])  # peft's own layers, uncompiled
    compiled.switch_task("interior")
    assert np.abs(image(compiled, "interior")[0] - image(plain, "interior")[0]).max() <= 1
    assert graphs() == before  # back in the lanes, with what was traced before


def test_more_adapters_than_lanes_run_uncompiled(compiled, plain) -> None:
    prompt = "a room <lora:floorplan:0.4> <lora:text:0.5>"  # three adapters, two lanes
    got, warnings = image(compiled, "interior", prompt)
    assert any(
        "3 adapters at once, and the compiled UNet has 2 lanes" in w for w in of_kind(warnings, NoticeKind.COMPILE)
    )
    assert np.abs(got - image(plain, "interior", prompt)[0]).max() <= 1


def test_a_failed_switch_keeps_the_compiled_set(compiled, plain, adapter_root: Path) -> None:
    compiled.switch_task("floorplan")
    broken = adapter_root / "adapters" / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    try:
        with pytest.raises(EngineError, match="broken"):
            image(compiled, "floorplan", "a room <lora:broken:1>")
    finally:
        broken.unlink()
    assert [use.name for use in compiled.loras.active] == ["floorplan"]
    assert np.abs(image(compiled, "floorplan")[0] - image(plain, "floorplan")[0]).max() <= 1


def test_auto_rank_is_the_largest_task_adapter_rank(cache_dir: Path, adapter_root: Path, eager_backend: None) -> None:
    engine = make(cache_dir, adapter_root, compile=True, rank=0)
    assert engine.loras.lanes.rank == 16  # "wide"; the demo adapters are rank 8 and 4
    assert engine.loras.lanes.lanes == 2  # the "both" task


def test_fused_mode_gives_way_to_compile(cache_dir: Path, adapter_root: Path, eager_backend: None) -> None:
    engine = make(cache_dir, adapter_root, compile=True, fuse=True)
    warnings = image(engine, "interior")[1]
    assert any("fuse is off with [model] compile" in w for w in of_kind(warnings, NoticeKind.COMPILE))
    assert not engine.loras.fused


def test_offload_rules_compile_out_with_a_notice(compiled) -> None:
    model = dataclasses.replace(compiled.model, offload="model", compiled="")
    unchanged, info = compiled._compile(compiled.pipeline, model, ModelSettings(compile=True))
    assert unchanged is None and info.compiled == ""
    notices = of_kind(compiled._notices, NoticeKind.COMPILE)
    compiled._notices.clear()
    assert any("compile is off with model offload" in n and 'offload = "none"' in n for n in notices)
