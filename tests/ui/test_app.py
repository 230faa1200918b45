"""The app with a fake engine: every key, previews, cancel, task switching, errors, hardware."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import threading
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from textual.widgets import Input, OptionList, Static

from spatiora_tui.config import KeySettings
from spatiora_tui.engine.api import EngineError, EngineOOM
from spatiora_tui.jobs.events import JobStepped
from spatiora_tui.outputs import read_metadata
from spatiora_tui.ui.messages import HardwareSampled, SessionNews
from spatiora_tui.ui.screens.history import HistoryScreen
from spatiora_tui.ui.widgets.task_pane import TaskPane
from tests.ui.helpers import news, outputs, settle, status, with_ui

SIZE = (160, 48)


async def type_prompt(pilot, text: str) -> None:
    pilot.app.query_one("#prompt", Input).value = text
    await pilot.pause()


async def start_held_generation(pilot, engine) -> None:
    """Start a generation and return once the fake engine holds it at its gate (step 2)."""
    await settle(pilot.app, pilot)
    await type_prompt(pilot, "x")
    await pilot.press("ctrl+g")
    assert await asyncio.to_thread(engine.at_gate.wait, 5)


async def test_loads_in_background_and_enables_generate(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "model ready: fake-model" in status(app)
        assert app.sub_title.startswith("fake-model · SD 1.x")
        assert app.query_one(TaskPane).active == "interior" and engine.switches == ["interior"]
        assert app.check_action("generate", ()) is True
        await pilot.press("escape")
        assert "nothing to cancel" in status(app)


async def test_ctrl_g_generates_streams_previews_and_saves(make) -> None:
    app, engine = make()
    seen: list[object] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "a sunlit loft")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        previews = news(seen, JobStepped)
        assert previews and previews[-1].preview.step == 4, "the last step's preview always arrives"
        files = outputs()
        assert len(files) == 1 and f"saved {files[0]}" in status(app)
        meta = read_metadata(files[0])
        assert meta.spatiora["request"]["prompt"] == "a sunlit loft"
        request = engine.requests[0]
        assert request.task == "interior" and request.steps == 4 and (request.width, request.height) == (64, 64)
        assert app.query_one("#seed", Input).placeholder == "last 1234"
        progress = str(app.query_one("#progress-text", Static).render())
        drawn = re.search(r"previews drawn: (\d+) of 4 steps, [\d.]+/s", progress)
        assert drawn is not None and 0 <= int(drawn[1]) <= 4, (
            f"the finished line says how many previews reached the screen: {progress!r}"
        )


async def test_the_preview_budget_is_the_configs_or_narrow_with_the_engine_in_this_process(make, ui_settings) -> None:
    """`preview_cpu_budget = "auto"` (the default): 1% with the engine in the app's process
    whatever its device; a number in config.toml is taken as it is."""
    for budget, device, expected in (("auto", "cuda", 0.01), ("auto", "cpu", 0.01), (0.2, "cpu", 0.2)):
        settings = dataclasses.replace(ui_settings, ui=dataclasses.replace(ui_settings.ui, preview_cpu_budget=budget))
        app, _ = make(settings=settings, device=device)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.model_ready and app.frames.pacer.budget == expected, (budget, device)


async def test_progress_shows_with_previews_off(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate, previews=False)
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        await pilot.pause(0.3)  # a few frame-clock ticks
        text = app.query_one("#progress-text", Static).render()
        assert "step 1/4" in str(text) and "first preview" not in str(text)
        gate.set()
        await settle(app, pilot)
        assert len(outputs()) == 1


async def test_a_compiled_model_says_the_first_image_at_a_size_waits_for_a_compile(make) -> None:
    """torch.compile traces the UNet at the first image of each size: a minute or more on a GPU
    with no step to show. The progress line says so until the first step, for that size only."""
    for compiled in ("reduce-overhead", ""):
        app, engine = make(gate=threading.Event(), gate_step=1, compiled=compiled)
        async with app.run_test(size=SIZE) as pilot:
            notes = []
            for _ in range(2):
                engine.at_gate.clear()
                await start_held_generation(pilot, engine)
                notes.append("compiles the UNet" in str(app.query_one("#progress-text", Static).render()))
                assert engine.gate is not None
                engine.gate.set()
                await settle(app, pilot)
                engine.gate = threading.Event()
            assert notes == ([True, False] if compiled else [False, False])
            assert len(outputs()) == (2 if compiled else 4)  # the output folder is the whole test's


async def test_the_preview_title_says_how_images_are_drawn(make) -> None:
    """Over SSH a terminal without sixel or kitty graphics gets blocks; the title says which
    renderer is drawing, so a user can tell why."""
    for renderer in ("halfcell", "unicode"):
        app, _ = make(renderer=renderer)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.query_one("#preview").border_title == f"Preview · latent2rgb · {renderer}"


async def test_enter_in_prompt_generates(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#prompt", Input).focus()
        await pilot.press(*"flat", "enter")
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["flat"] and len(outputs()) == 1


async def test_form_errors_are_reported_not_run(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+g")
        assert "prompt is empty" in status(app) and app.query_one("#status").has_class("error")
        await type_prompt(pilot, "x")
        app.query_one("#size", Input).value = "500"
        await pilot.press("ctrl+g")
        assert "WIDTHxHEIGHT" in status(app)
        app.query_one("#size", Input).value = "100x64"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        # Checked as every engine checks it, before it is queued: the message is the engine's.
        assert "multiple of 8" in status(app) and app.query_one("#status").has_class("error")
        assert engine.requests == [] and app.session.jobs() == []


async def test_escape_cancels_the_running_generation(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        assert app.check_action("cancel", ()) is True
        await pilot.press("escape")
        assert "cancelling" in status(app)
        gate.set()
        await settle(app, pilot)
        assert "cancelled after 2 steps; nothing saved" in status(app)
        assert outputs() == []


async def test_ctrl_t_switches_task_and_refills_the_form(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert engine.switches == ["interior", "floorplan"]
        assert app.query_one(TaskPane).active == "floorplan"
        assert "switched in 6 ms" in str(app.query_one("#task-detail").render())
        await pilot.press("ctrl+t", "ctrl+t")
        await settle(app, pilot)
        assert app.query_one(TaskPane).active == "interior", "wraps around: floorplan -> base -> interior"


async def test_a_leak_warning_shows_in_the_task_pane_and_status_line(make) -> None:
    app, engine = make()
    engine.switch_warning = "memory after switching adapters is RAM 300 MB above the baseline"
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert "RAM 300 MB above the baseline" in str(app.query_one("#task-detail").render())
        assert "RAM 300 MB above the baseline" in status(app)


async def test_task_list_selects_with_arrows_and_enter(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#task-list", OptionList).focus()
        await pilot.press("down", "down", "enter")
        await settle(app, pilot)
        assert engine.switches[-1] == "base" and app.query_one(TaskPane).active == "base"
        assert engine.prefetched[-2:] == ["floorplan", "base"], "each highlighted task is read ahead"


async def test_task_switch_during_a_run_waits_for_it(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert "switch when the queue is done" in status(app)
        assert engine.switches == ["interior"], "the running job is not disturbed"
        assert engine.prefetched == ["floorplan"], "its adapters are read while the job runs"
        gate.set()
        await settle(app, pilot)
        assert engine.requests[0].task == "interior"
        assert engine.switches == ["interior", "floorplan"] and app.query_one(TaskPane).active == "floorplan"
        assert len(outputs()) == 1


async def test_a_generation_with_no_switch_queued_leaves_the_task_pane_alone(make, monkeypatch) -> None:
    # Each generation's end clears the queued switch; with none queued, relabelling the task list
    # and detail for nothing cost a layout of the screen.
    relabels: list[str | None] = []
    relabel = TaskPane._relabel
    monkeypatch.setattr(TaskPane, "_relabel", lambda self: (relabels.append(self.active), relabel(self))[1])
    app, _engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        before = len(relabels)
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert len(outputs()) == 1
        assert len(relabels) == before


async def test_generate_while_running_queues_the_request_and_says_where(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        await type_prompt(pilot, "second")
        await pilot.press("ctrl+g")
        assert "queued job 2: 1st in the queue (ctrl+r shows it)" in status(app)
        await type_prompt(pilot, "third")
        await pilot.press("ctrl+g")
        assert "queued job 3: 2nd in the queue" in status(app)
        gate.set()
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["x", "second", "third"] and len(outputs()) == 3


async def test_typing_works_while_generating(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        app.query_one("#prompt", Input).focus()
        await pilot.press(*"yz")
        assert app.query_one("#prompt", Input).value == "xyz"
        gate.set()
        await settle(app, pilot)


async def test_out_of_memory_is_explained_and_the_app_keeps_running(make) -> None:
    app, engine = make(fail_generate=EngineOOM("out of memory during denoising at 64x64; lower width/height"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert "out of memory" in status(app) and "lower width/height" in status(app)
        engine.fail_generate = None
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert len(outputs()) == 1 and "saved" in status(app)


async def test_engine_error_and_load_failure_are_shown(make) -> None:
    app, engine = make(fail_generate=EngineError("adapter 'floorplan' is corrupt; replace it"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert "generation failed (job 1, interior): adapter 'floorplan' is corrupt" in status(app)
    app, engine = make(fail_load="model path /nope does not exist; fix model.source")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "model failed to load: model path /nope" in status(app)
        assert app.check_action("generate", ()) is None


async def test_unwritable_output_keeps_the_image_on_screen(make, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("SPATIORA_OUTPUT_DIR", str(blocker))
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert "could not save the image" in status(app)
        assert app.query_one("#preview-image").display is True


async def test_history_lists_images_and_metadata(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "first room")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        # An image another tool wrote, with escape sequences in its name and its metadata.
        foreign = Path(os.environ["SPATIORA_OUTPUT_DIR"]) / "zz\x1b]0;PWNED\x07.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", "evil \x1b[2J prompt\nSteps: 20, Seed: 1")
        Image.new("RGB", (8, 8)).save(foreign, pnginfo=info)
        os.utime(foreign, (1, 1))  # the oldest: listed last
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen)
        text = str(app.screen.query_one("#history-text", Static).render())
        assert "first room" in text
        options = app.screen.query_one(OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any("zz\\x1b]0;PWNED\\x07" in label for label in labels) and "\x1b" not in "".join(labels)
        assert "first room" in labels[0], "the history index gives each image its prompt"
        options.highlighted = options.option_count - 1
        await pilot.pause()
        text = str(app.screen.query_one("#history-text", Static).render())
        assert "evil \\x1b[2J prompt" in text and "\x1b" not in text, "no raw escape reaches the terminal"
        await pilot.press("f")
        assert app.screen.has_class("large")
        await pilot.press("escape")
        assert not app.screen.has_class("large")
        await pilot.press("escape")
        assert not isinstance(app.screen, HistoryScreen)
        await pilot.press("ctrl+o", "ctrl+o")
        assert not isinstance(app.screen, HistoryScreen), "ctrl+o toggles"


async def test_pasted_control_characters_never_stay_in_the_prompt(make) -> None:
    from textual import events

    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        prompt = app.query_one("#prompt", Input)
        prompt.focus()
        prompt.post_message(events.Paste("a loft\x1b]0;PWNED\x07\tnext\x1b[2J"))
        await pilot.pause()
        assert prompt.value == "a loft]0;PWNED next[2J"
        assert "removed 3 control character(s) from the prompt" in status(app)
        app.query_one("#negative", Input).value = "dark\x9b31m"
        await pilot.pause()
        assert app.query_one("#negative", Input).value == "dark31m"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert engine.requests[-1].prompt == "a loft]0;PWNED next[2J"


async def test_previews_are_throttled_to_the_frame_rate(make, ui_settings) -> None:
    settings = with_ui(ui_settings, preview_fps=0.5)
    app, engine = make(settings=settings)
    seen: list[object] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(app, pilot)
        app.query_one("#steps", Input).value = "40"
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        steps = [m.preview.step for m in news(seen, JobStepped)]
        # At 0.5 fps a fast run posts step 1 and the last step only; a newer preview may also
        # replace step 1 while it waits in the queue (can_replace), so 1 or 2 arrive.
        assert steps[-1] == 40 and len(steps) <= 2 and set(steps) <= {1, 40}


async def test_a_preview_over_the_budget_waits_for_a_later_frame(make) -> None:
    # With slow steps (tens of seconds on a CPU) each preview is affordable, just not the moment
    # it arrives: one repaint a second may have used the budget. It is drawn once the budget has
    # room, not dropped until the next step.
    from spatiora_tui.engine.api import StepPreview
    from spatiora_tui.ui.pacing import PreviewPacer

    clock = {"wall": 100.0, "cpu": 5.0}
    gate = threading.Event()
    app, engine = make(gate=gate, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await start_held_generation(pilot, engine)
        pacer = PreviewPacer(8, 0.01, clock=lambda: clock["wall"], cpu_clock=lambda: clock["cpu"])
        pacer.start()
        assert pacer.should_draw(), "the first preview was drawn"
        app.frames.pacer = pacer
        clock["wall"] += 1.0
        clock["cpu"] += 0.1  # 10% of the wall time used: far over a 1% budget
        image = Image.new("RGB", (64, 64), (200, 30, 30))
        app.post_message(SessionNews(JobStepped(app.jobs.running, StepPreview(2, 4, image, 1.0), 2.0)))
        await pilot.pause()
        app.frames.tick()
        widget = app.query_one("#preview-image")
        assert widget.image is not image, "over the budget: not drawn yet"
        assert "step 2/4" in str(app.query_one("#progress-text").render()), "progress is shown at once"
        clock["wall"] += 20.0  # 1% of 21 s is 0.21 s: room again
        app.frames.tick()
        assert widget.image is image, "drawn on a later frame"
        gate.set()
        await settle(app, pilot)


async def test_keys_can_be_remapped_from_config(make, ui_settings) -> None:
    settings = dataclasses.replace(ui_settings, keys=KeySettings(generate="f5", next_task="f6"))
    app, engine = make(settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert engine.requests == []
        await pilot.press("f5")
        await settle(app, pilot)
        assert len(engine.requests) == 1
        await pilot.press("f6")
        await settle(app, pilot)
        assert engine.switches[-1] == "floorplan"
        keys = {b.binding.id: b.binding.key for b in app.active_bindings.values() if b.binding.id}
        assert keys["generate"] == "f5" and keys["next_task"] == "f6"


async def test_commands_are_in_the_palette(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Generate", "Cancel generation", "Next task mode", "History", "Task: floorplan"):
            assert title in titles


async def test_hardware_pane_without_gpu(make) -> None:
    app, engine = make(gpu=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.pause(0.3)
        text = str(app.query_one("#hw-gpu").render())
        assert "no NVIDIA GPU — NVML unavailable" in text
        host = str(app.query_one("#hw-host").render())
        assert "12 %" in host and "512 MB" in host and "8.0 GB / 24.0 GB" in host
        assert "RSS (no GPU)" in str(app.query_one("#hw-spark-label").render())


async def test_hardware_pane_with_gpu_and_task_peaks(make) -> None:
    gate = threading.Event()
    app, engine = make(gpu=True, gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.pause(0.3)
        text = str(app.query_one("#hw-gpu").render())
        for fragment in (
            "NVIDIA H100",
            "20.0 GB / 79.6 GB",
            "this process 19.5 GB",
            "load 87 %",
            "54 °C",
            "412 / 700 W",
        ):
            assert fragment in text, fragment
        await type_prompt(pilot, "x")
        await pilot.press("ctrl+g")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await pilot.pause(0.4)  # the 4 Hz sampler takes readings while the task runs
        app.frames.offer_sample(HardwareSampled(app.telemetry.latest))
        app.frames.flush()  # as a frame would, whatever the budget
        assert "denoise · interior" in str(app.query_one("#hw-stage").render())
        gate.set()
        await settle(app, pilot)
        peaks = str(app.query_one("#hw-peaks").render())
        assert "interior" in peaks and "VRAM 19.5 GB" in peaks
        assert "by stage" in peaks and "denoise" in peaks
        await pilot.pause(0.4)
        assert "idle" in str(app.query_one("#hw-stage").render())


def test_ui_never_imports_the_ml_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, spatiora_tui.ui.app, spatiora_tui.ui.screens.history; "
        "print(' '.join(m for m in ('torch', 'diffusers', 'peft', 'transformers', 'pynvml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_keys_arriving_in_one_burst_generate_with_everything_typed(make) -> None:
    """Over SSH, or typing fast, the prompt's characters and ctrl+g arrive together: the request
    must hold every character typed before ctrl+g (a priority binding read the field before the
    field had taken the characters)."""
    from textual import events

    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#prompt", Input).focus()
        await pilot.pause()
        for ch in "a burst":
            app.post_message(events.Key("space" if ch == " " else ch, ch))
        app.post_message(events.Key("ctrl+g", None))
        await settle(app, pilot)
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["a burst"], status(app)


async def test_history_lists_its_folder_off_the_ui_thread(make, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder of thousands of images on a slow disk must not freeze the screen while it is read.
    from spatiora_tui.ui.screens import history

    threads: list[bool] = []
    real = history.list_images

    def recording(folder: Path, *args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(history, "list_images", recording)
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen)
        assert threads == [False], "the listing ran on the UI thread"
        assert "no images yet" in str(app.screen.query_one("#history-text", Static).render())


async def test_u_in_the_history_loads_an_images_settings_into_the_prompt_pane(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")  # floorplan
        await settle(app, pilot)
        await type_prompt(pilot, "a flat with two bedrooms")
        for field, value in (("#seed", "77"), ("#steps", "3"), ("#guidance", "5.5"), ("#scheduler", "heun")):
            app.query_one(field, Input).value = value
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        made = engine.requests[-1]
        await pilot.press("ctrl+t", "ctrl+t")  # away: base, then interior, and the fields with it
        await settle(app, pilot)
        await type_prompt(pilot, "something else")
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        await pilot.press("u")
        await settle(app, pilot)
        assert not isinstance(app.screen, HistoryScreen)
        assert "settings of" in status(app) and "(floorplan)" in status(app)
        assert app.query_one(TaskPane).active == "floorplan"
        values = {f: app.query_one(f, Input).value for f in ("#prompt", "#seed", "#steps", "#guidance", "#scheduler")}
        assert values == {
            "#prompt": "a flat with two bedrooms",
            "#seed": "77",
            "#steps": "3",
            "#guidance": "5.5",
            "#scheduler": "heun",
        }
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        again = engine.requests[-1]
        assert (again.task, again.prompt, again.seed, again.steps, again.guidance, again.scheduler) == (
            made.task,
            made.prompt,
            made.seed,
            made.steps,
            made.guidance,
            made.scheduler,
        )
        assert engine.requests[-1] is not made and len(outputs()) == 2


async def test_hardware_pane_names_the_engines_machine_and_its_link(make) -> None:
    # With --engine, the pane shows the other machine's readings (RemoteTelemetry), titled with
    # its name, and the link's round trip and rate under the engine's state.
    from spatiora_tui.hw import HardwareSnapshot, HostReading
    from spatiora_tui.remote.telemetry import RemoteTelemetry

    class Box:
        bytes_received = 0

        def hardware(self):
            self.bytes_received += 4096
            host = HostReading(cpu_percent=40.0, process_rss_mb=3000.0, ram_used_mb=9000.0, ram_total_mb=64000.0)
            return HardwareSnapshot(time=1.0, host=host, stage="denoise", task="interior"), {}, {}

    from spatiora_tui.ui.app import SpatioraApp
    from tests.fake_engine import FakeEngine

    settings = make()[0].settings
    app = SpatioraApp(
        settings, FakeEngine(settings), renderer="unicode", telemetry=RemoteTelemetry(Box(), hz=20, where="gpu-box")
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.pause(0.5)
        assert app.query_one("#hardware").border_title == "Hardware · gpu-box"
        stage = str(app.query_one("#hw-stage").render())
        assert "denoise · interior" in stage and "link" in stage and " ms · " in stage and "KB/s" in stage
        assert "40 %" in str(app.query_one("#hw-host").render()), "the other machine's CPU"
