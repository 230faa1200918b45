"""The model picker and tasks with their own base model, with the fake engine."""

from __future__ import annotations

import dataclasses

from textual.widgets import Input, OptionList

from spatiora_tui.engine.api import ModelChoice
from spatiora_tui.ui.screens.models import ModelPicker
from spatiora_tui.ui.widgets.task_pane import TaskPane
from tests.ui.helpers import outputs, settle, status

SIZE = (160, 48)
CHOICES = (
    ModelChoice("fake-model", "/models/fake-model.safetensors", 2048.0, "SD 1.x", current=True),
    ModelChoice("juggernaut", "/models/xl/juggernaut.safetensors", 6800.0, "SDXL"),
    ModelChoice(
        "flux1-dev",
        "/models/flux1-dev.safetensors",
        23000.0,
        "a Flux model, not a Stable Diffusion checkpoint",
        loadable=False,
    ),
)


async def open_picker(app, pilot) -> ModelPicker:
    await pilot.press("ctrl+l")
    await settle(app, pilot)
    assert isinstance(app.screen, ModelPicker)
    return app.screen


async def test_ctrl_l_lists_the_checkpoints_and_loads_the_chosen_one(make) -> None:
    app, engine = make(choices=CHOICES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = await open_picker(app, pilot)
        options = picker.query_one(OptionList)
        assert options.option_count == 3
        texts = [str(options.get_option_at_index(i).prompt) for i in range(3)]
        assert texts[0].startswith("● fake-model") and "SDXL" in texts[1] and "Flux" in texts[2]
        assert options.get_option_at_index(2).disabled, "a file that cannot load is listed, not offered"
        assert "2 of 3 loadable" in str(picker.query_one("#models-note").render())
        assert options.highlighted == 0, "the cursor starts on the model loaded now"
        await pilot.press("enter")  # the current one: nothing to load
        await settle(app, pilot)
        assert isinstance(app.screen, ModelPicker) and engine.model_switches == []
        await pilot.press("down", "enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, ModelPicker)
        assert engine.model_switches == ["/models/xl/juggernaut.safetensors"]
        assert "loaded juggernaut (SD 1.x) in 1.5 s" in status(app)
        assert app.sub_title.startswith("juggernaut · SD 1.x")
        assert engine.switches[-1] == "interior", "the active task's adapters come back on the new model"
        assert any("adapter 'interior' is for SDXL" in n.message for n in app._notifications)
        app.query_one("#prompt", Input).value = "a loft"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert len(outputs()) == 1, "and it generates"


async def test_escape_closes_the_picker_and_changes_nothing(make) -> None:
    app, engine = make(choices=CHOICES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await open_picker(app, pilot)
        await pilot.press("escape")
        await settle(app, pilot)
        assert not isinstance(app.screen, ModelPicker) and engine.model_switches == []


async def test_a_failed_model_switch_says_why_and_keeps_what_is_loaded(make) -> None:
    app, engine = make(choices=CHOICES, fail_model_switch="juggernaut.safetensors is cut short; download it again")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = await open_picker(app, pilot)
        picker.query_one(OptionList).highlighted = 1
        await pilot.press("enter")
        await settle(app, pilot)
        assert "could not load the model: juggernaut.safetensors is cut short" in status(app)
        assert app.model_ready and app.check_action("generate", ()) is True


async def test_an_empty_library_says_where_to_put_checkpoints(make) -> None:
    app, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = await open_picker(app, pilot)
        assert "no checkpoints found" in str(picker.query_one("#models-note").render())


async def test_a_task_with_its_own_model_is_marked_and_switching_loads_it(make, ui_settings) -> None:
    tasks = (*ui_settings.tasks[:2], dataclasses.replace(ui_settings.tasks[2], name="xl-plan", model="juggernaut"))
    app, engine = make(settings=dataclasses.replace(ui_settings, tasks=tasks))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        pane = app.query_one(TaskPane)
        label = str(pane.query_one(OptionList).get_option("xl-plan").prompt)
        assert "⟳ own model" in label
        app.request_switch("xl-plan")
        await settle(app, pilot)
        assert engine.model_switches == ["juggernaut"]
        assert pane.active == "xl-plan" and "loaded juggernaut" in status(app)
        detail = str(pane.query_one("#task-detail").render())
        assert "model     juggernaut (last load 1.5 s)" in detail
        assert "⟳ own model" not in str(pane.query_one(OptionList).get_option("xl-plan").prompt)


async def test_the_command_palette_offers_the_model_picker(make) -> None:
    app, _ = make(choices=CHOICES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Model" in commands
