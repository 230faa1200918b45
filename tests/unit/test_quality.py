"""bench/quality.py: `spatiora eval`'s bookkeeping, on an engine that draws the procedural scenes
themselves (so the scorer's verdicts are known)."""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace
from typing import Any

from spatiora_tui.bench import quality
from spatiora_tui.config import load_settings
from spatiora_tui.procedural.scenes import Scene, draw


class SceneEngine:
    """Draws each prompt's scene: rooms for "interior", plans for "floorplan", and for any other
    task a room with grey walls whatever was asked."""

    def __init__(self, scenes: list[Scene]) -> None:
        self.scenes = {scene.caption(): scene for scene in scenes}
        self.seeds: dict[str, list[int]] = {}

    def generate(self, request: Any) -> Any:
        self.seeds.setdefault(request.task, []).append(request.seed)
        scene = self.scenes[request.prompt]
        if request.task == "floorplan":
            image = draw(scene, "plan", random.Random(request.seed))
        elif request.task == "interior":
            image = draw(scene, "room", random.Random(request.seed))
        else:
            image = draw(dataclasses.replace(scene, wall="grey"), "room", random.Random(request.seed))
        return SimpleNamespace(image=image, timings=SimpleNamespace(image_ms=250.0))


def test_evaluate_counts_kinds_wall_colours_and_rooms() -> None:
    settings, added = quality.with_base_tasks(load_settings(None), ["interior", "floorplan"])
    scenes = quality.prompts(12)
    tasks = [settings.task(n) for n in ("interior", "floorplan", *added)]
    engine = SceneEngine(scenes)
    results = {r.task: r for r in quality.evaluate(engine, tasks, scenes, seeds=2)}
    # Every image has its own seed, the same ones in every row.
    assert len(set(engine.seeds["interior"])) == 24
    assert all(seeds == engine.seeds["interior"] for seeds in engine.seeds.values())

    interior, floorplan, base = results["interior"], results["floorplan"], results[quality.BASE_TASK]
    assert interior.images == floorplan.images == 24
    assert (interior.rooms, interior.plans, floorplan.plans) == (24, 0, 24)
    assert interior.walls_matched == interior.walls_asked == 24
    assert sum(n for n, _ in interior.by_colour.values()) == 24
    assert all(n == m for n, m in interior.by_colour.values())
    # Grey walls whatever was asked: only the prompts that asked for grey match.
    asked_grey = 2 * sum(scene.wall == "grey" for scene in scenes)
    assert base.walls_matched == asked_grey
    assert all(m == (n if colour == "grey" else 0) for colour, (n, m) in base.by_colour.items())
    # Every plan is counted under the rooms its prompt asked for.
    assert sorted(floorplan.counted) == sorted({scene.rooms for scene in scenes})
    assert sum(len(c) for c in floorplan.counted.values()) == 24
    assert floorplan.row()["s / image"] == 0.25

    table = quality.table(list(results.values()))
    assert "| interior | 24 | 0 % | 100 % | 100 % | – | 0.25 |" in table
    words = quality.colours(list(results.values()))
    assert not any(line.startswith("floorplan:") for line in words.splitlines())  # no rooms, no line
    assert f"grey {asked_grey}/{asked_grey}" in words.splitlines()[-1]


def test_base_rows_keep_each_task_but_its_adapters() -> None:
    settings, added = quality.with_base_tasks(load_settings(None), ["floorplan"])
    assert added == ["floorplan, no adapter", quality.BASE_TASK, quality.NO_PROMPT]
    task, bare, plain = settings.task("floorplan"), settings.task(added[0]), settings.task(added[1])
    assert settings.task(quality.NO_PROMPT).render_prompt("a two-room flat") == ""
    assert bare.adapters == () and plain.adapters == ()
    assert (bare.prompt_template, bare.negative_prompt, bare.guidance) == (
        task.prompt_template,
        task.negative_prompt,
        task.guidance,
    )
    assert (plain.prompt_template, plain.negative_prompt) == ("{prompt}", "")
