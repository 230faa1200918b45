"""The queue in the TUI, by keyboard, on the fake engine: queue while one runs, reorder, cancel,
retry, pause and resume; batches with their grid; a queue left by a session that ended."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

from PIL import Image
from textual.widgets import DataTable, Input

from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.jobs.job import JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.ui.screens.queue import QueueScreen
from spatiora_tui.ui.screens.resume import ResumeQueue
from tests.fake_engine import FakeEngine
from tests.ui.helpers import outputs, settle, status

SIZE = (160, 48)


def queue_dir() -> Path:
    return Path(os.environ["SPATIORA_STATE_DIR"]) / "queues"


async def type_prompt(pilot, text: str) -> None:
    pilot.app.query_one("#prompt", Input).value = text
    await pilot.pause()


async def queue_prompts(pilot, *prompts: str) -> None:
    for prompt in prompts:
        await type_prompt(pilot, prompt)
        await pilot.press("ctrl+g")
        await pilot.pause()


def rows(app) -> list[tuple[str, ...]]:
    table = app.screen.query_one(DataTable)
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def select_job(pilot, job_id: int) -> None:
    table = pilot.app.screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(str(job_id)))
    await pilot.pause()


async def test_queue_reorder_cancel_pause_and_resume_by_keyboard(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await queue_prompts(pilot, "running one")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await queue_prompts(pilot, "second", "third", "fourth")
        assert "queued job 4: 3rd in the queue" in status(app)
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, QueueScreen)
        table = rows(app)
        assert [r[0] for r in table] == ["1", "2", "3", "4"] and "running" in table[0][1]
        assert all("queued" in r[1] for r in table[1:])
        await select_job(pilot, 4)
        await pilot.press("u", "u")  # fourth moves to the front of the waiting jobs
        assert [j.request.prompt for j in app.session.waiting()] == ["fourth", "second", "third"]
        await select_job(pilot, 3)
        await pilot.press("x")  # cancel "third"
        assert app.session.job(3).state is JobState.CANCELLED
        await pilot.press("p")  # pause: the running job finishes, nothing new starts
        assert app.session.paused and "paused" in rows(app)[-1][1]
        gate.set()
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["running one"]
        assert app.session.job(1).state is JobState.DONE
        await pilot.press("p")  # resume
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["running one", "fourth", "second"]
        assert len(outputs()) == 3
        await pilot.press("escape")
        assert not isinstance(app.screen, QueueScreen)


async def test_a_failed_job_is_retried_from_the_queue(make) -> None:
    app, engine = make(oom_at_step=2)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await queue_prompts(pilot, "too big")
        await settle(app, pilot)
        assert "out of memory (job 1, interior)" in status(app)
        engine.oom_at_step = None
        await pilot.press("ctrl+r")
        assert "failed" in rows(app)[0][1] and "out of memory" in rows(app)[0][4]
        await pilot.press("r")
        await settle(app, pilot)
        assert app.session.job(2).state is JobState.DONE and len(outputs()) == 1
        assert [r[0] for r in rows(app)] == ["1", "2"], "the queue screen follows the session"


async def test_escape_cancels_the_running_job_and_the_queue_goes_on(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await queue_prompts(pilot, "first")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await queue_prompts(pilot, "second")
        await pilot.press("escape")
        assert "1 job(s) still wait" in status(app)
        gate.set()
        await settle(app, pilot)
        assert app.session.job(1).state is JobState.CANCELLED and app.session.job(2).state is JobState.DONE
        assert len(outputs()) == 1


async def test_a_batch_of_four_saves_each_image_and_a_contact_sheet(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#count", Input).value = "4"
        app.query_one("#seed", Input).value = "20"
        await queue_prompts(pilot, "four variations")
        await settle(app, pilot)
        assert [r.seed for r in engine.requests] == [20, 21, 22, 23]
        files = outputs()
        sheets = [f for f in files if f.stem.endswith("-batch")]
        assert len(files) == 5 and len(sheets) == 1
        assert f"contact sheet {sheets[0]}" in status(app)
        shown = app.query_one("#preview-image").image
        assert shown is not None and shown.width > shown.height * 0.9 and shown.width > 64, "the grid, not one image"
        with Image.open(sheets[0]) as sheet:
            assert sheet.size == (2 * 64 + 4, 2 * 64 + 4)


async def test_a_bad_batch_count_is_refused_with_its_range(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#count", Input).value = "500"
        await queue_prompts(pilot, "too many")
        assert "batch count must be between 1 and 100, got 500" in status(app)
        assert engine.requests == []


async def test_a_sweep_typed_in_the_prompt_pane_runs_and_saves_its_grid(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#seed", Input).value = "5"
        app.query_one("#sweep", Input).value = "steps=2,3 | prompt=oak,pine"
        await queue_prompts(pilot, "an oak hall")
        await settle(app, pilot)
        assert [(r.steps, r.prompt, r.seed) for r in engine.requests] == [
            (2, "an oak hall", 5),
            (3, "an oak hall", 5),
            (2, "an pine hall", 5),
            (3, "an pine hall", 5),
        ]
        grids = [f for f in outputs() if f.stem.endswith("-sweep")]
        assert len(grids) == 1 and f"grid {grids[0]}" in status(app)
        shown = app.query_one("#preview-image").image
        assert shown is not None and shown.width > 2 * 64, "the labelled grid, not one image"


async def test_a_bad_sweep_or_a_sweep_with_a_batch_is_refused_saying_why(make) -> None:
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#sweep", Input).value = "seed=1,2 | colour=red"
        await queue_prompts(pilot, "a hall")
        assert "sweep: colour: not an axis" in status(app)
        app.query_one("#sweep", Input).value = "task=interior,nope"
        await queue_prompts(pilot, "a hall")
        assert "sweep: task=nope: unknown task" in status(app)
        app.query_one("#sweep", Input).value = "seed=1,2"
        app.query_one("#count", Input).value = "3"
        await queue_prompts(pilot, "a hall")
        assert "set the batch count to 1" in status(app)
        assert engine.requests == [] and app.session.jobs() == []


def leave_a_queue(settings, *prompts: str) -> None:
    """A session that queued jobs and ended without running them (its lock goes with it)."""
    engine = FakeEngine(settings)
    engine.load()
    session = Session(engine, settings, store=QueueStore(queue_dir()))
    for prompt in prompts:
        session.submit(GenerationRequest(prompt=prompt, task="floorplan", seed=3))
    assert session.flush()
    session.close()


async def test_a_queue_left_by_a_session_that_ended_is_offered_and_resumed(make, ui_settings) -> None:
    leave_a_queue(ui_settings, "left one", "left two")
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, ResumeQueue)
        text = str(app.screen.query_one("#resume-text").render())
        assert "2 job(s) were left in the queue" in text and "left one" in text
        await pilot.press("enter")
        await settle(app, pilot)
        assert [r.prompt for r in engine.requests] == ["left one", "left two"]
        assert len(outputs()) == 2
    assert list(queue_dir().glob("queue-*.json")) == []


async def test_a_left_queue_can_be_kept_for_later_or_discarded(make, ui_settings) -> None:
    leave_a_queue(ui_settings, "kept")
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("escape")
        assert "kept" in status(app) and engine.requests == []
    assert len(list(queue_dir().glob("queue-*.json"))) == 1
    app, engine = make()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, ResumeQueue), "offered again"
        await pilot.press("D")
        assert "discarded" in status(app)
    assert list(queue_dir().glob("queue-*.json")) == []


async def test_quitting_with_jobs_waiting_keeps_them_for_the_next_start(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await queue_prompts(pilot, "running")
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await queue_prompts(pilot, "waiting")
        await pilot.press("ctrl+q")
    gate.set()
    (path,) = queue_dir().glob("queue-*.json")
    kept = [job["request"]["prompt"] for job in json.loads(path.read_text())["jobs"]]
    assert kept == ["running", "waiting"], "the interrupted job runs again, the waiting one too"


async def test_escape_on_a_job_another_shell_queued_asks_first_then_cancels_it(make) -> None:
    gate = threading.Event()
    app, engine = make(gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        # As the user's engine records a job a command in another shell queued.
        app.session.submit(
            GenerationRequest(prompt="a batch from a script", task="interior"), by="spatiora generate on /dev/pts/3"
        )
        app.kick()
        assert await asyncio.to_thread(engine.at_gate.wait, 5)
        await pilot.pause()
        assert "queued by spatiora generate on /dev/pts/3" in status(app)
        await pilot.press("escape")
        assert "job 1 was queued by spatiora generate on /dev/pts/3: escape again cancels it" in status(app)
        assert app.session.job(1).state is JobState.RUNNING, "one key does not stop another shell's work"
        await pilot.press("escape")
        assert "cancelling" in status(app)
        gate.set()
        await settle(app, pilot)
        assert app.session.job(1).state is JobState.CANCELLED
        app.action_queue()
        await pilot.pause()
        assert any("spatiora generate on /dev/pts/3" in cell for row in rows(app) for cell in row)
