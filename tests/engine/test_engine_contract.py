"""One contract for every engine (as diffusers' PipelineTesterMixin holds every pipeline to one):
the fake engine the UI and session tests use, and LocalEngine on the demo model. Where the fake
and the real engine differ, a test here fails for the fake, and the tests that lean on it lie.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from spatiora_tui.config import AdapterRef, TaskSettings
from spatiora_tui.engine.api import Engine, EngineError, GenerationRequest, StepPreview
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings

STEPS = 5


def contract_settings(root: Path):
    settings = small_settings(root)
    weightless = TaskSettings(
        name="weightless",
        adapters=(AdapterRef("interior", None),),
        prompt_template="{prompt}",
        scheduler="euler",
        steps=STEPS,
        width=64,
        height=64,
    )
    return dataclasses.replace(settings, tasks=(*settings.tasks, weightless))


@pytest.fixture(scope="module", params=["fake", "local"])
def engine(request: pytest.FixtureRequest, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = contract_settings(tmp_path_factory.mktemp("contract"))
    if request.param == "fake":
        eng: Engine = FakeEngine(settings)
    else:
        from spatiora_tui.engine.local import LocalEngine

        eng = LocalEngine(settings, cache_dir=cache_dir)
    eng.load()
    return eng


def ask(**changes: object) -> GenerationRequest:
    return dataclasses.replace(GenerationRequest(prompt="a loft", task="base", seed=7, steps=STEPS), **changes)


def pixels(engine: Engine, request: GenerationRequest) -> bytes:
    result = engine.generate(request)
    assert result.image is not None
    return result.image.tobytes()


def test_steps_are_reported_one_to_n_and_the_image_has_the_size_asked(engine: Engine) -> None:
    seen: list[StepPreview] = []
    result = engine.generate(ask(width=96, height=64), on_step=seen.append)
    assert [p.step for p in seen] == list(range(1, STEPS + 1))
    assert {p.total for p in seen} == {STEPS}
    assert [p.elapsed_s for p in seen] == sorted(p.elapsed_s for p in seen)
    assert result.steps_done == STEPS and not result.cancelled
    assert result.image is not None and result.image.size == (96, 64)
    assert (result.params.width, result.params.height, result.params.steps) == (96, 64, STEPS)


def test_cancel_stops_within_one_step_and_leaves_no_image(engine: Engine) -> None:
    cancel = threading.Event()

    def on_step(preview: StepPreview) -> None:
        if preview.step == 2:
            cancel.set()

    result = engine.generate(ask(), on_step=on_step, cancel=cancel)
    assert result.cancelled and result.image is None
    assert 2 <= result.steps_done <= 3


def test_the_same_seed_gives_the_same_image_and_another_seed_another(engine: Engine) -> None:
    first = pixels(engine, ask(seed=11))
    assert pixels(engine, ask(seed=11)) == first
    assert pixels(engine, ask(seed=12)) != first


def test_a_guidance_of_zero_is_honoured_not_taken_for_unset(engine: Engine) -> None:
    result = engine.generate(ask(guidance=0.0))
    assert result.params.guidance == 0.0
    assert pixels(engine, ask(guidance=0.0)) != pixels(engine, ask(guidance=7.0))


def test_the_scheduler_asked_for_is_the_one_used(engine: Engine) -> None:
    result = engine.generate(ask(scheduler="dpmpp_2m"))
    assert result.params.scheduler == "dpmpp_2m"
    assert pixels(engine, ask(scheduler="dpmpp_2m")) != pixels(engine, ask(scheduler="euler"))


def test_the_task_fills_in_what_the_request_leaves_out(engine: Engine) -> None:
    result = engine.generate(GenerationRequest(prompt="a loft", task="floorplan", seed=3))
    task = next(t for t in engine.tasks if t.name == "floorplan")
    p = result.params
    assert (p.steps, p.guidance, p.scheduler, p.width, p.height) == (
        task.steps,
        task.guidance,
        task.scheduler,
        task.width,
        task.height,
    )
    assert p.full_prompt.startswith("floor plan of a loft") and engine.active_task == "floorplan"


def test_an_adapter_without_a_weight_is_recorded_at_the_weight_it_ran_at(engine: Engine) -> None:
    result = engine.generate(ask(task="weightless"))
    (use,) = result.params.adapters
    assert use.name == "interior" and use.weight == 1.0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"task": "no-such-task"}, "no-such-task"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"steps": 0}, "steps"),
        ({"width": 100}, "width"),
        ({"scheduler": "no-such-sampler"}, "scheduler"),
    ],
)
def test_a_bad_request_is_refused_with_a_message_naming_it(engine: Engine, change: dict, words: str) -> None:
    with pytest.raises(EngineError, match=words):
        engine.generate(ask(**change))
