"""The TUI on an engine in another process, shared with other clients. When the engine stops
(killed, crashed, its link dropped) the window stays up and says why in one line, the job that
was running is marked failed with that reason, the queued jobs are held (not started one by one
into a dead engine), and the restart key brings the engine back and lets the queue go on. When
another client switches the shared model, the window shows it, and who did. In-process: a
RemoteEngine on a Hub with the fake engine, through links the test can drop."""

from __future__ import annotations

import asyncio
import threading

from textual.widgets import Input
from textual.widgets._footer import FooterKey

from spatiora_tui.config import Settings
from spatiora_tui.engine.api import ModelChoice
from spatiora_tui.jobs.job import JobState
from spatiora_tui.remote.client import OnEnd, OnFrame, RemoteEngine
from spatiora_tui.remote.server import Hub
from spatiora_tui.ui.app import SpatioraApp
from tests.fake_engine import FakeEngine
from tests.ui.fakes import fake_telemetry
from tests.ui.helpers import outputs, settle, status
from tests.unit.test_link_formats import DroppableLink

SIZE = (160, 48)


async def wait_until(pilot, check, what: str, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def footer(app: SpatioraApp) -> str:
    """The descriptions of the keys the footer shows now."""
    return " · ".join(str(key.description) for key in app.screen.query(FooterKey))


async def test_a_dead_engine_holds_the_queue_and_the_restart_key_lets_it_go_on(ui_settings: Settings) -> None:
    gate = threading.Event()
    fake = FakeEngine(ui_settings, gate=gate, gate_step=2)
    hub = Hub(fake)
    links: list[DroppableLink] = []

    def open_link(on_frame: OnFrame, on_end: OnEnd) -> DroppableLink:
        links.append(DroppableLink(hub, on_frame, on_end))
        return links[-1]

    engine = RemoteEngine(open_link)
    app = SpatioraApp(ui_settings, engine, renderer="unicode", telemetry=fake_telemetry(False))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.model_ready and not app.check_action("restart_engine", ())
            for prompt in ("a loft", "a flat"):
                app.query_one("#prompt", Input).value = prompt
                await pilot.press("ctrl+g")
                await pilot.pause()
            assert await asyncio.to_thread(fake.at_gate.wait, 10)
            links[-1].drop()  # the engine dies mid-image
            gate.set()  # (the hub's own worker, still in this process, may end its call)
            first, second = app.session.jobs()
            await wait_until(pilot, lambda: first.state is JobState.FAILED, "the running job to fail")
            await pilot.pause(0.2)
            assert second.state is JobState.PAUSED and app.session.paused  # held, not run into a dead engine
            assert "the engine was killed" in (first.error or "") and "ctrl+n starts it again" in (first.error or "")
            assert app.check_action("restart_engine", ())  # the Footer offers the restart
            await wait_until(pilot, lambda: "Restart engine" in footer(app), "the footer to offer the restart")
            assert len(links) == 1  # nothing started the engine behind the user's back

            await pilot.press("ctrl+n")
            await wait_until(
                pilot,
                lambda: app.session.job(second.id).state is JobState.DONE,
                "the held job to run after the restart",
            )
            await settle(app, pilot)
            assert len(links) == 2 and engine.reconnects == 1
            assert not app.session.paused and not app.check_action("restart_engine", ())
            await pilot.pause(0.2)
            assert "Restart engine" not in footer(app), "the restart key leaves the footer with the engine up"
            assert len(outputs()) == 1
            assert first.state is JobState.FAILED  # kept in the queue, to retry
    finally:
        engine.close()
        hub.close()


async def test_a_model_another_client_switches_to_is_shown_with_who_chose_it(ui_settings: Settings) -> None:
    choice = ModelChoice("dreamshaper_8", "/models/dreamshaper_8.safetensors", 2048.0, "SD 1.x")
    hub = Hub(FakeEngine(ui_settings, choices=(choice,)))
    mine = RemoteEngine(lambda on_frame, on_end: DroppableLink(hub, on_frame, on_end), label="spatiora on /dev/pts/1")
    other = RemoteEngine(lambda on_frame, on_end: DroppableLink(hub, on_frame, on_end), label="spatiora on /dev/pts/7")
    app = SpatioraApp(ui_settings, mine, renderer="unicode", telemetry=fake_telemetry(False))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            other.switch_model("/models/dreamshaper_8.safetensors")
            await wait_until(pilot, lambda: "dreamshaper_8" in app.sub_title, "the window to show the new model")
            assert "spatiora on /dev/pts/7 switched the shared engine to dreamshaper_8" in status(app)
            assert mine.model is not None and mine.model.name == "dreamshaper_8" and mine.active_task is None
    finally:
        other.close()
        mine.close()
        hub.close()


async def test_on_an_engine_apart_on_a_gpu_previews_get_a_wide_budget(ui_settings: Settings) -> None:
    """`preview_cpu_budget = "auto"`: an engine in its own process that computes on a GPU loses
    nothing to the window's drawing, so previews get 25% of the UI thread, not 1%; on the CPU its
    torch threads use every core, and the budget stays narrow."""
    for device, expected in (("cuda", 0.25), ("cpu", 0.01)):
        hub = Hub(FakeEngine(ui_settings, device=device))

        def open_link(on_frame: OnFrame, on_end: OnEnd, hub: Hub = hub) -> DroppableLink:
            return DroppableLink(hub, on_frame, on_end)

        engine = RemoteEngine(open_link)
        app = SpatioraApp(ui_settings, engine, renderer="unicode", telemetry=fake_telemetry(False))
        try:
            async with app.run_test(size=SIZE) as pilot:
                await settle(app, pilot)
                assert app.model_ready and app.frames.pacer.budget == expected, device
        finally:
            engine.close()
            hub.close()
