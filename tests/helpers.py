"""Plain helpers the tests share (fixtures live in the conftest files; helpers do not)."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from spatiora_tui.config import AdapterRef, ModelSettings, Settings, TaskSettings
from spatiora_tui.engine.api import AdapterUse, GenerationResult, MemoryPeaks, ModelInfo, ResolvedRequest, Timings

REPO = Path(__file__).resolve().parents[1]
#: Examples hypothesis draws for a fuzz test that talks to a live server in this process (each
#: one a round trip through threads, about 10 ms). A longer soak before a release:
#: SPATIORA_FUZZ_EXAMPLES=5000 pytest tests/unit/test_http.py tests/unit/test_remote.py
LIVE_FUZZ_EXAMPLES = int(os.environ.get("SPATIORA_FUZZ_EXAMPLES", "250"))


def small_tasks() -> tuple[TaskSettings, ...]:
    common: dict[str, Any] = dict(steps=4, guidance=7.0, width=64, height=64)
    return (
        TaskSettings(
            name="interior",
            adapters=(AdapterRef("interior", 0.8),),
            prompt_template="interior photo of {prompt}",
            scheduler="dpmpp_2m",
            **common,
        ),
        TaskSettings(
            name="floorplan",
            adapters=(AdapterRef("floorplan", 1.0),),
            prompt_template="floor plan of {prompt}",
            scheduler="euler",
            **common,
        ),
        TaskSettings(name="base", adapters=(), prompt_template="{prompt}", scheduler="euler", **common),
    )


#: The random-weight demo model: tiny, fast, with adapters of different layer sets and ranks.
RANDOM_DEMO = ModelSettings(source="demo-random")


def small_settings(base_dir: Path, **changes: Any) -> Settings:
    """Random-demo settings with tiny tasks, rooted at `base_dir` (adapters/ and outputs/ under it)."""
    settings = Settings(model=RANDOM_DEMO, tasks=small_tasks(), base_dir=base_dir)
    return dataclasses.replace(settings, **changes) if changes else settings


# -- tiny single-file checkpoints of every family ------------------------------------------------

FAMILIES = (("sd1", False), ("sd2", False), ("sdxl", False), ("sd1", True), ("sdxl", True))


@dataclasses.dataclass(frozen=True)
class Tiny:
    family: str
    inpaint: bool
    path: Path
    config: Path
    pipe: object  # the pipeline the file was written from (do not load adapters into it)


def make_result(**changes: Any) -> GenerationResult:
    """A finished generation as the engine would return it, without running one."""
    params = ResolvedRequest(
        task="interior",
        prompt="a loft, with: colons",
        full_prompt="photo of a loft, with: colons",
        negative_prompt="blurry\nsecond line",
        seed=1234,
        steps=30,
        guidance=6.5,
        scheduler="dpmpp_2m",
        width=64,
        height=48,
        adapters=(AdapterUse("interior", 0.8, "ab" * 32), AdapterUse("wood", 0.35, "cd" * 32)),
    )
    fields: dict[str, Any] = dict(
        params=params,
        model=ModelInfo(
            name="spatiora-demo",
            source="demo",
            kind="demo",
            family="sd1",
            device="cpu",
            dtype="fp32",
            random_weights=True,
        ),
        image=Image.new("RGB", (64, 48), (10, 200, 30)),
        cancelled=False,
        steps_done=30,
        timings=Timings(switch_ms=1.5, first_preview_ms=20.0, image_ms=900.0, decode_ms=50.0, step_ms=(30.0,) * 30),
        memory=MemoryPeaks(peak_rss_mb=500.0, process_peak_rss_mb=510.0),
    )
    fields.update(changes)
    return GenerationResult(**fields)


@contextmanager
def sigint_handled_by(handler: Callable[..., object] | int) -> Iterator[None]:
    """SIGINT set to `handler` inside the block (Python's default_int_handler: a terminal's
    foreground job; SIG_IGN: a shell's background job), put back after."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def leftover_engines(runtime: Path) -> list[int]:
    """The user's engines (their pids) still running from `runtime`, each killed (SIGKILL)."""
    import json
    import os

    killed = []
    for record in (runtime / "spatiora").glob("*.json"):
        try:
            pid = json.loads(record.read_text(encoding="utf-8"))["pid"]
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        killed.append(pid)
    return killed
