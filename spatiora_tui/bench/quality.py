"""What each task mode draws, as numbers: the seed paper's "task-appropriate behaviour" measured
with the procedural scorer (spatiora_tui/procedural/scorer.py) on the demo model's kind of
prompts. For each task with adapters, and for the base model alone: the share of images that are
plans and that are rooms, how often a room's walls have the colour the prompt asked for, the
rooms counted in plans by the number asked for, and the time per image."""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spatiora_tui.config import Settings, TaskSettings
from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.procedural import scorer
from spatiora_tui.procedural.scenes import Scene, random_scene

BASE_TASK = "base (no adapter)"
NO_PROMPT = "base, no prompt"
PROMPT_SEED = 31
#: The first image seed; each prompt and repeat has its own (the same in every row), so a row's
#: images differ by their noise too, and "no prompt" is not one image repeated.
SEED = 1000


@dataclass
class TaskQuality:
    task: str
    images: int = 0
    plans: int = 0
    rooms: int = 0
    by_colour: dict[str, list[int]] = field(default_factory=dict)  # wall colour asked -> [rooms, matched]
    counted: dict[int, list[int]] = field(default_factory=dict)  # rooms asked -> rooms counted in plans
    seconds: list[float] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)  # (image, prompt) for a grid

    @property
    def walls_asked(self) -> int:
        """Rooms whose prompt named a wall colour."""
        return sum(n for n, _ in self.by_colour.values())

    @property
    def walls_matched(self) -> int:
        return sum(m for _, m in self.by_colour.values())

    def row(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "images": self.images,
            "plans %": 100.0 * self.plans / max(1, self.images),
            "rooms %": 100.0 * self.rooms / max(1, self.images),
            "walls as asked %": 100.0 * self.walls_matched / self.walls_asked if self.walls_asked else None,
            "walls by colour asked": {c: {"rooms": n, "matched": m} for c, (n, m) in sorted(self.by_colour.items())},
            "rooms counted by rooms asked": {n: statistics.mean(c) for n, c in sorted(self.counted.items())},
            "s / image": statistics.median(self.seconds) if self.seconds else None,
        }


def prompts(count: int, seed: int = PROMPT_SEED) -> list[Scene]:
    """`count` scenes whose captions are the prompts (the same every run)."""
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def without_adapters(task: str) -> str:
    """The name of the row that runs `task`'s prompt and settings on the base model alone."""
    return f"{task}, no adapter"


def with_base_tasks(settings: Settings, names: Sequence[str]) -> tuple[Settings, list[str]]:
    """`settings` plus the base model alone: for each task in `names` its own template and
    settings without its adapters (what the adapter changes); the plain prompt with no negative
    prompt and the first task's other settings; and no prompt at all (what the base draws
    unconditioned, and the chance level of the prompt-word figures). Returns the settings and
    the added tasks' names."""
    added = [dataclasses.replace(settings.task(n), name=without_adapters(n), adapters=(), model=None) for n in names]
    first = settings.task(names[0]) if names else settings.tasks[0]
    plain = dataclasses.replace(
        first, name=BASE_TASK, adapters=(), prompt_template="{prompt}", negative_prompt="", model=None
    )
    added += [plain, dataclasses.replace(plain, name=NO_PROMPT, prompt_template="")]
    return dataclasses.replace(settings, tasks=(*settings.tasks, *added)), [t.name for t in added]


def evaluate(
    engine: Any,
    tasks: Sequence[TaskSettings],
    scenes: Sequence[Scene],
    seeds: int = 1,
    on_image: Callable[[str, int, int], object] | None = None,
) -> list[TaskQuality]:
    """Generate every scene's caption `seeds` times per task and score what was drawn."""
    model = scorer.kind_model()
    results = []
    total = len(scenes) * seeds
    for task in tasks:
        quality = TaskQuality(task.name)
        for index, scene in enumerate(scenes):
            for seed in range(seeds):
                result = engine.generate(
                    GenerationRequest(prompt=scene.caption(), task=task.name, seed=SEED + index * seeds + seed)
                )
                image = result.image
                quality.images += 1
                quality.seconds.append((result.timings.image_ms or 0.0) / 1000.0)
                if len(quality.samples) < 8:
                    quality.samples.append((image, scene.caption()))
                if model.kind(image) == "plan":
                    quality.plans += 1
                    quality.counted.setdefault(scene.rooms, []).append(scorer.room_count(image))
                else:
                    quality.rooms += 1
                    matched = scorer.wall_colour(image) == scene.wall
                    tally = quality.by_colour.setdefault(scene.wall, [0, 0])
                    tally[0] += 1
                    tally[1] += matched
                if on_image is not None:
                    on_image(task.name, index * seeds + seed + 1, total)
        results.append(quality)
    return results


def table(results: Sequence[TaskQuality]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| task | images | plans | rooms | walls as asked (rooms) | rooms counted, for 2/3/4/5/6 asked (plans) | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for quality in results:
        row = quality.row()
        walls = f"{row['walls as asked %']:.0f} %" if row["walls as asked %"] is not None else "–"
        counted = row["rooms counted by rooms asked"]
        rooms = " / ".join(f"{counted[n]:.1f}" if n in counted else "–" for n in range(2, 7)) if counted else "–"
        seconds = f"{row['s / image']:.2f}" if row["s / image"] is not None else "–"
        lines.append(
            f"| {quality.task} | {quality.images} | {row['plans %']:.0f} % | {row['rooms %']:.0f} % | {walls} | "
            f"{rooms} | {seconds} |"
        )
    return "\n".join(lines)


def colours(results: Sequence[TaskQuality]) -> str:
    """Per task with rooms: for each wall colour asked, how many of its rooms have it (chance is
    one in the number of colours)."""
    lines = []
    for quality in results:
        if quality.by_colour:
            tallies = ", ".join(f"{c} {m}/{n}" for c, (n, m) in sorted(quality.by_colour.items()))
            lines.append(f"{quality.task}: walls of the colour asked, by colour: {tallies}")
    return "\n".join(lines)


def grid(results: Sequence[TaskQuality], scale: int = 2) -> Any:
    """A contact sheet: one row per task, its first images (upscaled)."""
    from PIL import Image

    images = [[image for image, _ in quality.samples] for quality in results]
    width = max((im.width for row in images for im in row), default=64) * scale
    height = max((im.height for row in images for im in row), default=64) * scale
    columns = max((len(row) for row in images), default=1)
    sheet = Image.new("RGB", (columns * width, len(images) * height), (255, 255, 255))
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            sheet.paste(image.resize((width, height), Image.Resampling.NEAREST), (c * width, r * height))
    return sheet
