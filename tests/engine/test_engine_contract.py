"""One contract for every engine (as diffusers' PipelineTesterMixin holds every pipeline to one):
the fake engine the UI and session tests use, and LocalEngine on the demo model. Where the fake
and the real engine differ, a test here fails for the fake, and the tests that lean on it lie.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.config import AdapterRef, TaskSettings
from spatiora_tui.engine.api import Engine, EngineError, GenerationRequest, StepPreview
from spatiora_tui.notices import Notice, NoticeKind, of_kind
from spatiora_tui.remote.client import RemoteEngine, pipe
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


@pytest.fixture(scope="module", params=["fake", "local", "remote", "http", pytest.param("ray", marks=pytest.mark.ray)])
def engine(
    request: pytest.FixtureRequest, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("contract")
    settings = contract_settings(root)
    stack = contextlib.ExitStack()
    if request.param == "fake":
        eng: Engine = FakeEngine(settings)
    elif request.param == "local":
        from spatiora_tui.engine.local import LocalEngine

        eng = LocalEngine(settings, cache_dir=cache_dir)
    else:
        from spatiora_tui.config import settings_to_toml

        config = root / "config.toml"
        config.write_text(settings_to_toml(settings), encoding="utf-8")
        if request.param == "remote":
            # LocalEngine in a `spatiora serve --stdio` process, through frames on its pipes.
            argv = [sys.executable, "-m", "spatiora_tui", "serve", "--stdio", "--config", str(config)]
            eng = RemoteEngine(pipe(argv))
        elif request.param == "http":
            # LocalEngine in a `spatiora serve --http` process (uvicorn), through its websocket.
            from spatiora_tui.remote.websocket import websocket
            from tests.http_server import http_server

            server = stack.enter_context(http_server(config))
            eng = RemoteEngine(websocket(f"unix:{server.socket}"))
        else:
            # The Ray Serve app on a local Ray: ingress, board and one engine replica.
            from spatiora_tui.remote.websocket import websocket
            from tests.ray_app import TOKEN, deployed

            request.getfixturevalue("ray_cluster")
            where = stack.enter_context(deployed(config))
            eng = RemoteEngine(websocket(where, TOKEN))
    eng.load()
    yield eng
    if isinstance(eng, RemoteEngine):
        eng.close()
    stack.close()


def ask(**changes: Any) -> GenerationRequest:
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
    if isinstance(engine, RemoteEngine):
        # The step reaches the client while the server goes on; the server stops within one
        # step of the cancel frame, which crosses the link meanwhile.
        assert result.steps_done >= 2
    else:
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


# -- image-to-image ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sketches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different init images, one with a transparent background, and a file that is not one."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("sketches")
    files = {}
    for name, colour in (("plan", (30, 30, 30)), ("other", (200, 40, 40))):
        image = Image.new("RGB", (96, 64), (240, 240, 235))
        ImageDraw.Draw(image).rectangle((10, 8, 80, 56), outline=colour, width=3)
        files[name] = folder / f"{name}.png"
        image.save(files[name])
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).line((0, 0, 63, 63), fill=(0, 0, 0, 255), width=4)
    files["transparent"] = folder / "transparent.png"
    layer.save(files["transparent"])
    files["text"] = folder / "notes.png"
    files["text"].write_text("not an image")
    return files


def test_image_to_image_runs_steps_times_strength_at_the_init_images_shape(
    engine: Engine, sketches: dict[str, Path]
) -> None:
    seen: list[StepPreview] = []
    result = engine.generate(ask(init_image=str(sketches["plan"]), strength=0.6), on_step=seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and {p.total for p in seen} == {3}  # int(5 x 0.6)
    assert result.steps_done == 3 and not result.cancelled
    p = result.params
    assert (p.steps, p.strength, p.init_image) == (STEPS, 0.6, str(sketches["plan"].resolve()))
    assert len(p.init_image_sha256) == 64
    # No size asked: the sketch's own 3:2 (at the task's pixel count, 64x64, its short side
    # would fall under the 64 pixels the smallest image has, so it stays 96x64).
    assert result.image is not None and result.image.size == (p.width, p.height) == (96, 64)
    assert not of_kind(result.warnings, NoticeKind.INIT_IMAGE)


def test_image_to_image_depends_on_the_init_image_the_strength_and_the_seed(
    engine: Engine, sketches: dict[str, Path]
) -> None:
    plan = ask(init_image=str(sketches["plan"]), strength=0.6)
    first = pixels(engine, plan)
    assert pixels(engine, plan) == first
    assert pixels(engine, dataclasses.replace(plan, init_image=str(sketches["other"]))) != first
    assert pixels(engine, dataclasses.replace(plan, strength=1.0)) != first
    assert pixels(engine, dataclasses.replace(plan, seed=8)) != first


def test_image_to_image_at_a_size_asked_crops_the_init_image_and_says_so(
    engine: Engine, sketches: dict[str, Path]
) -> None:
    result = engine.generate(ask(init_image=str(sketches["plan"]), width=64, height=64))
    assert result.image is not None and result.image.size == (64, 64)
    assert result.params.strength == 0.75  # A1111's default
    assert any("cropped" in w and isinstance(w, Notice) and w.kind is NoticeKind.INIT_IMAGE for w in result.warnings)


def test_a_transparent_init_image_is_flattened_onto_white_and_said(engine: Engine, sketches: dict[str, Path]) -> None:
    result = engine.generate(ask(init_image=str(sketches["transparent"])))
    assert result.image is not None
    assert any("transparency" in w for w in of_kind(result.warnings, NoticeKind.INIT_IMAGE))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"init_image": "no-such-sketch.png"}, "does not exist"),
        ({"init_image": "text"}, "not an image"),
        ({"init_image": "folder"}, "is a folder"),
        ({"strength": 0.0}, "strength must be"),
        ({"strength": 1.5}, "strength must be"),
        ({"strength": 0.1}, "raise the strength or use at least 10 steps"),
    ],
)
def test_bad_image_to_image_input_is_refused_with_a_message_naming_it(
    engine: Engine, sketches: dict[str, Path], change: dict, words: str
) -> None:
    change = {"init_image": str(sketches["plan"]), **change}
    if change["init_image"] == "text":
        change["init_image"] = str(sketches["text"])
    elif change["init_image"] == "folder":
        change["init_image"] = str(sketches["plan"].parent)
    with pytest.raises(EngineError, match=words):
        engine.generate(ask(**change))
