"""Overlapped adapter loading (SwiftDiffusion's bounded asynchronous LoRA loading) against the
sequential switch: time to first preview, image time, how long the loop waited for the read at
step K, and what starting without the adapter costs the image.

For each K (sequential, then K = 0, 1, 2, 4 and a quarter of the steps), each prompt is drawn
after a switch whose adapter must come from disk: before every request the adapter is taken off
the device and out of the RAM tier, so the file is read again (from the page cache: the read is
this disk's best case). The quality cost is measured against the sequential image of the same
prompt and seed: the mean absolute pixel difference, and with the demo model the procedural
scorer's verdict (plan or room) against the task's kind.

    python -m benchmarks.overlap --config config.toml --task floorplan --prompts 10      # the demo model
    python -m benchmarks.overlap --arch sd15 --size 256x256 --steps 8 --prompts 2        # timing, SD 1.5 UNet
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def build(args: argparse.Namespace, tmp: Path) -> tuple[Any, str, str | None]:
    """The engine, the task measured, and the kind its images should be (None: not the demo)."""
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.local import LocalEngine

    settings = load_settings(Path(args.config) if args.config else None)
    if args.arch:
        from spatiora_tui.bench.arch import engine_parts

        other = next(t.name for t in settings.tasks if t.name != args.task)
        settings, loader = engine_parts(
            settings,
            args.arch,
            (args.task, other),
            args.steps or 8,
            parse_size(args.size),
            tmp / "adapters",
            device="cpu",
        )
        engine = LocalEngine(settings, loader=loader)
        engine.load()
        return engine, args.task, None
    task = settings.task(args.task)
    if args.steps:
        task = dataclasses.replace(task, steps=args.steps)
        settings = dataclasses.replace(
            settings, tasks=tuple(task if t.name == args.task else t for t in settings.tasks)
        )
    engine = LocalEngine(settings)
    engine.load()
    kind = {"floorplan": "plan", "interior": "room"}.get(args.task)
    return engine, args.task, kind


def cold(engine: Any, task: str) -> None:
    """The task's adapters off the device and out of RAM, and another task active."""
    engine.switch_task(next(t.name for t in engine.tasks if t.name != task))
    for ref in engine.tasks[[t.name for t in engine.tasks].index(task)].adapters:
        engine.loras.evict(ref.name)
        engine.loras.ram.discard(ref.name)


def main() -> None:
    from spatiora_tui.bench import quality
    from spatiora_tui.bench.arch import ARCHES
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.procedural import scorer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: the usual lookup)")
    parser.add_argument("--arch", choices=[a for a in ARCHES if a != "demo"], help="a random-weight architecture")
    parser.add_argument("--task", default="floorplan")
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the task's; 8 with --arch)")
    parser.add_argument("--size", default="256x256", help="with --arch (default 256x256)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine, task, kind = build(args, Path(tmp))
        steps = engine.tasks[[t.name for t in engine.tasks].index(task)].steps
        ks: list[int | None] = [None, 0, 1, 2, 4, max(1, steps // 4)]
        ks = list(dict.fromkeys(ks))
        scenes = quality.prompts(args.prompts)
        model = scorer.kind_model() if kind else None
        reference: dict[int, np.ndarray] = {}
        print(f"{engine.model.name} · task {task} · {steps} steps · {args.prompts} prompts")
        print("| load | first preview | image | loop waited at K | mean abs diff to sequential | of the task's kind |")
        print("|---|---|---|---|---|---|")
        for k in ks:
            engine._overlap_override = -1 if k is None else k
            firsts, images, waits, diffs, right = [], [], [], [], 0
            for index, scene in enumerate(scenes):
                cold(engine, task)
                start = time.perf_counter()
                first: list[float] = []

                def on_step(preview: Any, first: list[float] = first, start: float = start) -> None:
                    if not first:
                        first.append(time.perf_counter() - start)

                result = engine.generate(
                    GenerationRequest(prompt=scene.caption(), task=task, seed=100 + index), on_step=on_step
                )
                images.append(time.perf_counter() - start)
                firsts.append(first[0] if first else float("nan"))
                if result.timings.late_patch_ms is not None:
                    waits.append(result.timings.late_patch_ms)
                pixels = np.asarray(result.image, dtype=np.int16)
                if k is None:
                    reference[index] = pixels
                diffs.append(float(np.abs(pixels - reference[index]).mean()))
                if model is not None:
                    right += model.kind(result.image) == kind
            label = "sequential" if k is None else f"overlapped, K = {k}"
            wait = f"{statistics.median(waits):.0f} ms" if waits else "–"
            share = f"{100 * right / len(scenes):.0f} %" if model is not None else "–"
            print(
                f"| {label} | {statistics.median(firsts):.3f} s | {statistics.median(images):.3f} s | {wait} | "
                f"{statistics.mean(diffs):.2f} / 255 | {share} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
