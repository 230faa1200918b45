"""The Session's model operations and what its events carry for a front end: loading and
replacing the base model as events, the size a job draws at and whether a compiled UNet compiles
for it first, the files a queue made, a queue held while its engine's link is down, and the
small helpers a front end shows the queue with (sheets so far, summaries, a form's submit)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PIL import Image

from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.jobs import events
from spatiora_tui.jobs.job import Job, JobKind
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.sheets import GroupSheets
from spatiora_tui.jobs.sweep import Axis
from spatiora_tui.jobs.view import queue_summary, submit_form
from tests.fake_engine import FakeEngine


def ask(prompt: str = "a loft", task: str = "interior", **changes) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, task=task, **changes)


def run_all(session: Session) -> list[events.SessionEvent]:
    said: list[events.SessionEvent] = []
    while session.run_next(said.append):
        pass
    return said


def test_loading_the_model_reports_progress_then_the_first_task_then_ready(settings) -> None:
    engine = FakeEngine(settings)
    said: list[events.SessionEvent] = []
    assert Session(engine, settings).load_model(said.append)
    kinds = [type(event) for event in said]
    assert kinds == [events.ModelLoading, events.TaskSwitched, events.ModelReady]
    ready = said[-1]
    assert isinstance(ready, events.ModelReady) and ready.model.name == "fake-model"
    assert ready.switch is None and ready.by == ""
    assert engine.active_task == settings.tasks[0].name


def test_a_model_that_fails_to_load_says_why_and_that_nothing_is_loaded(settings) -> None:
    engine = FakeEngine(settings, fail_load="model path /nope does not exist")
    said: list[events.SessionEvent] = []
    assert not Session(engine, settings).load_model(said.append)
    failed = said[-1]
    assert isinstance(failed, events.ModelFailed)
    assert failed == events.ModelFailed("model path /nope does not exist", None, replacing=False)


def test_replacing_the_model_reports_the_switch_then_the_task_again_on_it(fake_engine, settings) -> None:
    said: list[events.SessionEvent] = []
    assert Session(fake_engine, settings).switch_model("/models/dreamshaper_8.safetensors", "floorplan", said.append)
    assert [type(event) for event in said] == [events.ModelLoading, events.ModelReady, events.TaskSwitched]
    ready, switched = said[1], said[2]
    assert isinstance(ready, events.ModelReady) and ready.switch is not None and ready.model.name == "dreamshaper_8"
    assert isinstance(switched, events.TaskSwitched) and switched.switch.task == "floorplan"
    assert switched.switch.model_switch == ready.switch, "the task's line carries the model's switch"


def test_a_failed_replacement_names_the_model_still_loaded(fake_engine, settings) -> None:
    fake_engine.fail_model_switch = "dreamshaper_8.safetensors is cut short"
    said: list[events.SessionEvent] = []
    assert not Session(fake_engine, settings).switch_model("/models/dreamshaper_8.safetensors", None, said.append)
    failed = said[-1]
    assert isinstance(failed, events.ModelFailed) and failed.replacing
    assert failed.model is not None and failed.model.name == "fake-model"


def test_a_job_start_carries_its_size_and_whether_a_compiled_unet_compiles_for_it(settings) -> None:
    engine = FakeEngine(settings, compiled="max-autotune-no-cudagraphs")
    engine.load()
    session = Session(engine, settings)
    session.submit(ask())  # the task's size: 64x64
    session.submit(ask(seed=2))
    session.submit(ask(width=96, height=64))
    started = [event for event in run_all(session) if isinstance(event, events.JobStarted)]
    assert [(e.width, e.height, e.compiles_first) for e in started] == [
        (64, 64, True),
        (64, 64, False),
        (96, 64, True),
    ]


def test_an_eager_unet_never_compiles_first(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    session.submit(ask())
    started = [event for event in run_all(session) if isinstance(event, events.JobStarted)]
    assert [(e.width, e.height, e.compiles_first) for e in started] == [(64, 64, False)]


def test_a_queue_knows_the_images_and_sheets_it_made(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_batch(ask(seed=5), 2)
    finished = run_all(session)
    sheet = next(event for event in finished if isinstance(event, events.GroupFinished))
    assert sheet.path is not None
    assert session.made() == {job.path for job in jobs} | {sheet.path}
    assert all(path is not None and path.exists() for path in session.made())


class Link:
    """A RemoteEngine's watch_link, as the test drives it."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str | None], object]] = []

    def watch(self, listener: Callable[[str | None], object]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def tell(self, why: str | None) -> None:
        for listener in list(self.listeners):
            listener(why)


def test_a_dropped_link_holds_the_queue_and_its_return_lets_it_go_on(fake_engine, settings) -> None:
    session, link = Session(fake_engine, settings), Link()
    stop = session.hold_while_down(link.watch)
    session.submit(ask())
    link.tell("your engine stopped (killed by SIGKILL)")
    assert session.paused and not session.wants_runner(), "no job starts while the engine is down"
    link.tell(None)
    assert not session.paused and session.wants_runner()
    session.release_runner()
    stop()
    assert link.listeners == []


def test_a_queue_the_user_paused_stays_paused_when_the_link_comes_back(fake_engine, settings) -> None:
    session, link = Session(fake_engine, settings), Link()
    session.hold_while_down(link.watch)
    session.pause()
    link.tell("the link dropped")
    link.tell(None)
    assert session.paused


def _job(job_id: int, group: str, cell: tuple[int, ...] = (), axes=()) -> Job:
    return Job(job_id, ask(), kind=JobKind.SWEEP if axes else JobKind.BATCH, group=group, cell=cell, axes=axes)


def test_a_batch_sheet_shows_from_its_second_image_and_a_sweep_grid_from_its_first() -> None:
    sheets = GroupSheets(side=32)
    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    assert sheets.add(_job(1, "batch-1"), red) is None, "one image is the image itself"
    two = sheets.add(_job(2, "batch-1"), blue)
    assert two is not None and two.width > 32
    axes = (("seed", ("1", "2")), ("steps", ("10", "20")))
    grid = sheets.add(_job(3, "sweep-1", (0, 0), axes), red)
    assert grid is not None, "a sweep's grid shows its cells to come"
    sheets.drop("batch-1")
    assert sheets.add(_job(4, "batch-1"), red) is None, "a dropped group starts afresh"


def test_a_form_submits_one_image_a_batch_or_a_sweep_and_says_which(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    assert submit_form(session, ask())[1] == "job 1"
    assert submit_form(session, ask(), count=3)[1] == "a batch of 3 (jobs 2-4)"
    jobs, what = submit_form(session, ask(), axes=[Axis("seed", ("1", "2", "3"))])
    assert len(jobs) == 3 and what == "a sweep of 3 (3 seed; jobs 5-7)"
    with pytest.raises(EngineError, match="^sweep: "):
        submit_form(session, ask(), axes=[Axis("seed", tuple(str(seed) for seed in range(101)))])
    with pytest.raises(EngineError, match="steps"):
        submit_form(session, ask(steps=0))


def test_a_queue_summary_counts_what_runs_waits_and_ended(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    assert queue_summary(session) == ""
    fake_engine.fail_generate = EngineError("the device fell off the bus")
    session.submit(ask())
    run_all(session)
    fake_engine.fail_generate = None
    session.submit(ask())
    run_all(session)
    session.pause()
    session.submit(ask())
    assert queue_summary(session) == "1 waiting, 1 done, 1 failed"
