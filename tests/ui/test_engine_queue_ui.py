"""The TUI as a view of the queue the user's engine keeps (remote/mirror.py): what a window
queues runs in the engine and shows in every window, a job another client queued shows here with
its previews, and closing the window leaves the queue running; the next window lists what ended
meanwhile. In-process: RemoteEngines on a Hub that hosts a Session on the fake engine."""

from __future__ import annotations

import asyncio
import threading

from textual.widgets import Input

from spatiora_tui.config import Settings
from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.jobs.job import JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.remote.server import Hub
from spatiora_tui.remote.wire import encode
from spatiora_tui.ui.app import SpatioraApp
from spatiora_tui.ui.screens.queue import QueueScreen
from tests.fake_engine import FakeEngine
from tests.ui.fakes import fake_telemetry
from tests.ui.helpers import outputs, settle, status
from tests.ui.test_shared_engine_ui import SIZE, wait_until
from tests.unit.test_link_formats import DroppableLink


def linked(hub: Hub, label: str) -> RemoteEngine:
    return RemoteEngine(lambda on_frame, on_end: DroppableLink(hub, on_frame, on_end), label=label)


async def test_a_window_shows_the_engines_queue_and_closing_it_leaves_the_queue_running(
    ui_settings: Settings, tmp_path
) -> None:
    gate = threading.Event()
    fake = FakeEngine(ui_settings, gate=gate, gate_step=2)
    hub = Hub(fake)
    hub.host(Session(fake, ui_settings, store=QueueStore(tmp_path / "engine-queue")))
    mine, other = linked(hub, "spatiora on /dev/pts/1"), linked(hub, "spatiora generate")
    app = SpatioraApp(ui_settings, mine, renderer="unicode", telemetry=fake_telemetry(False))
    assert isinstance(app.session, SessionMirror)
    try:
        said: list[str] = []
        say = app.say
        app.say = lambda text, error=False: (said.append(text), say(text, error))[1]  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            app.query_one("#prompt", Input).value = "a loft"
            await pilot.press("ctrl+g")
            assert await asyncio.to_thread(fake.at_gate.wait, 10)
            await wait_until(pilot, lambda: "generating job 1" in status(app), "the window to show its job running")
            # Another shell's command queues two images on the same engine: shown here at once.
            request = GenerationRequest(prompt="a flat", task=ui_settings.tasks[0].name, seed=5, steps=2)
            other.session("submit", request=encode(request), count=2)
            await wait_until(pilot, lambda: len(app.session.waiting()) == 2, "the other client's jobs in the queue")
            await pilot.press("ctrl+r")  # the queue screen lists them all, whoever queued them
            assert isinstance(app.screen, QueueScreen) and app.screen.table.row_count == 3
            await pilot.press("ctrl+r")
            gate.set()
            await wait_until(pilot, lambda: any("generating job 2" in line for line in said), "the other's job, here")
            await pilot.press("ctrl+q")
        # The window is gone; the engine goes on with the last job and saves it.
        await asyncio.to_thread(_until, lambda: len(outputs()) == 4, "all three images and the sheet")
    finally:
        mine.close()

    # The next window comes back to the engine: it lists what ended meanwhile.
    again = linked(hub, "spatiora on /dev/pts/2")
    app = SpatioraApp(ui_settings, again, renderer="unicode", telemetry=fake_telemetry(False))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await wait_until(pilot, lambda: "3 done" in status(app), "the queue's summary")
            assert [job.state for job in app.session.jobs()] == [JobState.DONE] * 3
    finally:
        again.close()
        other.close()
        hub.close()


def _until(check, what: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
