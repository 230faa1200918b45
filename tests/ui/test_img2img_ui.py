"""Image-to-image in the TUI, by keyboard, on the fake engine: a sketch typed as a path and sent
through the floor-plan mode, an image picked in the history with `i`, an old image's init image
and strength reloaded with `u`, and a wrong path said before anything is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from textual.widgets import Input

from spatiora_tui.outputs import read_metadata
from spatiora_tui.ui.screens.history import HistoryScreen
from spatiora_tui.ui.widgets.task_pane import TaskPane
from tests.ui.helpers import outputs, settle, status

SIZE = (160, 56)


@pytest.fixture
def sketch(tmp_path: Path) -> Path:
    image = Image.new("RGBA", (120, 80), (0, 0, 0, 0))  # lines on a transparent layer
    ImageDraw.Draw(image).rectangle((10, 10, 110, 70), outline=(0, 0, 0, 255), width=3)
    path = tmp_path / "plan sketch.png"
    image.save(path)
    return path


def field(app, name: str) -> str:
    return app.query_one(f"#{name}", Input).value


async def fill(pilot, **values: str) -> None:
    for name, value in values.items():
        pilot.app.query_one(f"#{name}", Input).value = value
    await pilot.pause()


async def test_a_sketch_goes_through_the_floor_plan_mode_and_its_image_records_it(make, sketch: Path) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")  # floorplan
        await settle(app, pilot)
        await fill(pilot, prompt="two bedrooms", init=str(sketch), strength="0.6", size="")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        request = engine.requests[-1]
        assert (request.task, request.init_image, request.strength, request.width) == (
            "floorplan",
            str(sketch),
            0.6,
            None,
        )
        assert "saved" in status(app)
        meta = read_metadata(outputs()[-1])
        assert meta.a1111["fields"]["Denoising strength"] == "0.6"
        assert len(meta.a1111["fields"]["Init image hash"]) == 12
        assert meta.spatiora is not None and meta.spatiora["request"]["init_image"] == str(sketch.resolve())
        # The transparent layer was flattened onto white, and the user is told.
        assert any("transparency" in w for w in meta.spatiora["warnings"])


@pytest.mark.parametrize(
    ("init", "strength", "words"),
    [
        ("missing.png", "0.6", "does not exist"),
        ("NOTES", "0.6", "not an image"),
        ("SKETCH", "1.5", "strength must be"),
        ("SKETCH", "abc", "not a number"),
        ("SKETCH", "0.05", "raise the strength"),
    ],
)
async def test_bad_init_input_is_said_before_anything_is_queued_and_the_fields_are_kept(
    make, sketch: Path, init: str, strength: str, words: str
) -> None:
    notes = sketch.with_name("notes.png")
    notes.write_text("meeting notes, not a picture")
    path = {"NOTES": str(notes), "SKETCH": str(sketch)}.get(init, str(sketch.with_name(init)))
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await fill(pilot, prompt="a loft", init=path, strength=strength, steps="10")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert words in status(app)
        assert engine.requests == [] and app.session.jobs() == []
        assert (field(app, "prompt"), field(app, "init"), field(app, "strength")) == ("a loft", path, strength)


async def test_i_in_the_history_starts_the_next_image_from_the_one_highlighted(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await fill(pilot, prompt="a sunlit loft", seed="5")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        (made,) = outputs()
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        await pilot.press("i")
        await settle(app, pilot)
        assert not isinstance(app.screen, HistoryScreen)
        assert field(app, "init") == str(made) and field(app, "size") == ""
        assert f"init image {made.name}" in status(app)
        await pilot.press("ctrl+t", "ctrl+t", "ctrl+t")  # round the tasks: the size still follows the image
        await settle(app, pilot)
        assert field(app, "size") == "" and field(app, "steps") == "4"
        await fill(pilot, prompt="the same loft at dusk")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        request = engine.requests[-1]
        assert (request.init_image, request.strength, request.width, request.height) == (str(made), 0.75, None, None)
        assert len(outputs()) == 2


async def test_u_in_the_history_reloads_an_images_init_image_and_strength(make, sketch: Path) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        await fill(pilot, prompt="two bedrooms", init=str(sketch), strength="0.45", steps="10")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        await pilot.press("ctrl+t", "ctrl+t")  # another task; its fields replace these
        await settle(app, pilot)
        await fill(pilot, init="", strength="0.75")
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        await pilot.press("u")
        await settle(app, pilot)
        assert app.query_one(TaskPane).active == "floorplan"
        assert (field(app, "init"), field(app, "strength")) == (str(sketch.resolve()), "0.45")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        again = engine.requests[-1]
        assert (again.task, again.init_image, again.strength) == ("floorplan", str(sketch.resolve()), 0.45)
