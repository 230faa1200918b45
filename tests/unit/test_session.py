"""The headless session with the fake engine: queue order, cancel, reorder, pause, task switches
between jobs, batches and their contact sheet, save failures, and the queue file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from spatiora_tui import failpoints
from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.jobs.events import (
    GroupFinished,
    ImageSaved,
    JobFailed,
    JobFinished,
    JobStarted,
    JobStepped,
    SessionEvent,
    TaskSwitched,
)
from spatiora_tui.jobs.job import JobKind, JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.outputs import read_metadata


def ask(prompt: str = "a loft", task: str = "interior", **changes) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, task=task, **changes)


def run_all(session: Session) -> list[SessionEvent]:
    events: list[SessionEvent] = []
    assert session.wants_runner()
    while session.run_next(events.append):
        pass
    return events


def test_jobs_run_in_order_and_each_saves_its_image(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = [session.submit(ask(f"room {i}", seed=i)) for i in range(3)]
    assert [session.position(j.id) for j in jobs] == [1, 2, 3]
    events = run_all(session)
    assert [r.prompt for r in fake_engine.requests] == ["room 0", "room 1", "room 2"]
    finished = [e for e in events if isinstance(e, JobFinished)]
    assert [e.job_id for e in finished] == [j.id for j in jobs]
    assert all(j.state is JobState.DONE and j.path is not None and j.path.exists() for j in jobs)
    assert all(j.result is not None and j.result.image is None for j in jobs), "saved images are not held twice"
    steps = [e.preview.step for e in events if isinstance(e, JobStepped) and e.job_id == jobs[0].id]
    assert steps == [1, 2, 3, 4]
    assert [e.job_id for e in events if isinstance(e, JobStarted)] == [j.id for j in jobs]
    assert not session.wants_runner(), "nothing left to run"


def test_a_job_submitted_while_the_runner_works_is_run_by_it(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    session.submit(ask("first"))
    assert session.wants_runner() and not session.wants_runner(), "one runner at a time"
    assert session.run_next()
    session.submit(ask("second"))
    assert session.run_next() and not session.run_next()
    assert [r.prompt for r in fake_engine.requests] == ["first", "second"]
    session.submit(ask("third"))
    assert session.wants_runner(), "the runner stopped: the next submit hands the role out again"


def test_waiting_jobs_move_cancel_and_pause(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    a, b, c = (session.submit(ask(p)) for p in "abc")
    assert session.move(c.id, -1) and [j.request.prompt for j in session.waiting()] == ["a", "c", "b"]
    assert session.move(c.id, -5) and session.position(c.id) == 1
    assert not session.move(c.id, -1), "already first"
    assert session.cancel(a.id) and a.state is JobState.CANCELLED and session.position(a.id) == 0
    assert not session.cancel(a.id), "a job ends once"
    session.pause()
    assert {j.state for j in session.waiting()} == {JobState.PAUSED}
    late = session.submit(ask("late"))
    assert late.state is JobState.PAUSED
    assert not session.wants_runner(), "a paused queue starts nothing"
    session.resume()
    assert {j.state for j in session.waiting()} == {JobState.QUEUED}
    run_all(session)
    assert [r.prompt for r in fake_engine.requests] == ["c", "b", "late"]


def test_pausing_lets_the_running_job_finish_and_starts_nothing_more(fake_engine, settings) -> None:
    fake_engine.gate = threading.Event()
    session = Session(fake_engine, settings)
    first, second = session.submit(ask("first")), session.submit(ask("second"))
    assert session.wants_runner()
    runner = threading.Thread(target=lambda: [None for _ in iter(session.run_next, False)])
    runner.start()
    assert fake_engine.at_gate.wait(5)
    session.pause()
    fake_engine.gate.set()
    runner.join(5)
    assert first.state is JobState.DONE and second.state is JobState.PAUSED
    assert [r.prompt for r in fake_engine.requests] == ["first"]


def test_cancelling_the_running_job_stops_it_within_a_step(fake_engine, settings) -> None:
    fake_engine.gate = threading.Event()
    session = Session(fake_engine, settings)
    job, after = session.submit(ask("held")), session.submit(ask("after"))
    events: list[SessionEvent] = []
    assert session.wants_runner()
    runner = threading.Thread(target=lambda: [None for _ in iter(lambda: session.run_next(events.append), False)])
    runner.start()
    assert fake_engine.at_gate.wait(5)
    assert session.running is job and session.cancel(job.id)
    fake_engine.gate.set()
    runner.join(5)
    assert job.state is JobState.CANCELLED and job.path is None and job.steps_done == 2
    assert after.state is JobState.DONE, "the queue goes on after a cancel"


def test_cancel_all_empties_the_queue(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = [session.submit(ask(p)) for p in "abc"]
    assert session.cancel_all() == 3
    assert {j.state for j in jobs} == {JobState.CANCELLED} and not session.wants_runner()


def test_task_switches_happen_between_jobs_with_the_next_task_prefetched(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    for task in ("interior", "interior", "floorplan", "interior"):
        session.submit(ask(task=task))
    events = run_all(session)
    switched = [e.switch.task for e in events if isinstance(e, TaskSwitched)]
    assert switched == ["interior", "floorplan", "interior"]
    assert session.switches_between_jobs == 2, "the first switch is not caused by the queue's order"
    assert fake_engine.prefetched == ["floorplan", "interior"], "read into RAM while the job before ran"


def test_a_task_switch_asked_while_jobs_wait_happens_once_they_are_done(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    session.submit(ask(task="interior"))
    session.request_switch("floorplan")
    assert fake_engine.prefetched == ["floorplan"]
    run_all(session)
    assert fake_engine.switches == ["interior", "floorplan"] and fake_engine.active_task == "floorplan"


def test_a_failed_job_says_why_and_can_be_retried(fake_engine, settings) -> None:
    fake_engine.oom_at_step = 2
    session = Session(fake_engine, settings)
    job = session.submit(ask())
    events = run_all(session)
    (failed,) = [e for e in events if isinstance(e, JobFailed)]
    assert failed.out_of_memory and "out of memory" in failed.error and job.state is JobState.FAILED
    fake_engine.oom_at_step = None
    again = session.retry(job.id)
    assert again is not None and again.id != job.id and again.request == job.request
    assert session.retry(again.id) is None, "only a failed or cancelled job is retried"
    run_all(session)
    assert again.state is JobState.DONE


def test_a_job_for_an_unknown_task_fails_and_the_queue_goes_on(fake_engine, settings) -> None:
    # A task this session's config has and the engine's does not (as after an edit): the check
    # at submit passes, the engine refuses it when it runs.
    import dataclasses

    gone = dataclasses.replace(settings.tasks[0], name="gone")
    session = Session(fake_engine, dataclasses.replace(settings, tasks=(*settings.tasks, gone)))
    bad, good = session.submit(ask(task="gone")), session.submit(ask())
    run_all(session)
    assert bad.state is JobState.FAILED and "gone" in (bad.error or "")
    assert good.state is JobState.DONE


def test_an_unexpected_error_fails_the_job_not_the_queue(fake_engine, settings) -> None:
    fake_engine.fail_generate = ZeroDivisionError("a defect")
    session = Session(fake_engine, settings)
    job = session.submit(ask())
    run_all(session)
    assert job.state is JobState.FAILED and job.error == "ZeroDivisionError: a defect"


def test_a_failed_save_keeps_the_image_until_saved_again(fake_engine, settings, tmp_path: Path) -> None:
    session = Session(fake_engine, settings)
    job = session.submit(ask())
    failpoints.arm("save", "enospc")
    run_all(session)
    assert job.state is JobState.DONE and job.path is None and "disk is full" in (job.error or "")
    assert len(session.unsaved) == 1 and job.result is not None and job.result.image is not None
    failpoints.reset()
    events: list[SessionEvent] = []
    assert session.save_again(events.append) == 0
    (saved,) = events
    assert isinstance(saved, ImageSaved) and saved.path is not None and job.path == saved.path
    assert session.unsaved == []


def test_a_batch_has_consecutive_seeds_and_a_contact_sheet(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_batch(ask(seed=41), 4)
    assert [j.request.seed for j in jobs] == [41, 42, 43, 44]
    assert {j.kind for j in jobs} == {JobKind.BATCH} and len({j.group for j in jobs}) == 1
    events = run_all(session)
    (done,) = [e for e in events if isinstance(e, GroupFinished)]
    assert done.path is not None and done.path.parent == settings.output_dir
    with Image.open(done.path) as sheet:
        assert sheet.size == (2 * 64 + 4, 2 * 64 + 4)
        assert sheet.getpixel((0, 0))[0] == 41 and sheet.getpixel((68 + 10, 68 + 10))[0] == 44
    meta = read_metadata(done.path)
    assert meta.parameters is not None and "Seed: 41" in meta.parameters
    assert all(read_metadata(j.path).a1111["fields"]["Seed"] == str(j.request.seed) for j in jobs if j.path)


def test_a_batch_seed_range_wraps_and_the_count_is_checked(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_batch(ask(seed=2**32 - 1), 2)
    assert [j.request.seed for j in jobs] == [2**32 - 1, 0]
    with pytest.raises(ValueError, match="between 1 and"):
        session.submit_batch(ask(), 0)
    random_start = session.submit_batch(ask(), 3)
    seeds = [j.request.seed for j in random_start]
    assert seeds[0] is not None and seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


def test_a_batch_with_a_cancelled_image_gets_a_sheet_of_the_rest(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_batch(ask(seed=1), 3)
    session.cancel(jobs[1].id)
    events = run_all(session)
    (done,) = [e for e in events if isinstance(e, GroupFinished)]
    assert done.path is not None
    with Image.open(done.path) as sheet:
        assert sheet.size == (2 * 64 + 4, 64)


def test_eta_counts_the_steps_ahead_at_the_measured_speed(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    first = session.submit(ask())
    assert session.eta_s(first.id) is None, "no speed measured yet"
    run_all(session)  # the fake reports 100 ms for 4 steps
    a, b = session.submit(ask()), session.submit(ask(steps=8))
    assert session.eta_s(a.id) == pytest.approx(0.1)
    assert session.eta_s(b.id) == pytest.approx(0.3)


# -- the queue file -------------------------------------------------------------------------------


def test_the_queue_file_holds_what_waits_and_a_new_session_adopts_it(fake_engine, settings, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Session(fake_engine, settings, store=QueueStore(state))
    first.submit(ask("kept 1", seed=5))
    first.submit_batch(ask("kept batch", seed=9), 2)
    assert first.flush()
    # The first session is still alive: its queue is not an orphan.
    assert QueueStore(state).orphans() == []
    first.close()  # as a crash would leave it (the lock is released with the process)
    second = Session(fake_engine, settings, store=QueueStore(state))
    orphans = QueueStore(state).orphans()
    assert len(orphans) == 1
    for orphan in orphans:
        orphan.release()
    count, problems = second.adopt(second._store.orphans())
    assert (count, problems) == (3, [])
    assert [j.request.prompt for j in second.waiting()] == ["kept 1", "kept batch", "kept batch"]
    assert [j.request.seed for j in second.waiting()] == [5, 9, 10]
    assert len({j.group for j in second.waiting()[1:]}) == 1
    assert len(list(state.glob("queue-*.json"))) == 1, "the old file is gone once the new one holds its jobs"
    run_all(second)
    assert second.flush()
    assert list(state.glob("queue-*.json")) == [], "an empty queue leaves no file"


def test_a_running_job_is_kept_in_the_file_and_a_done_one_is_not(fake_engine, settings, tmp_path: Path) -> None:
    fake_engine.gate = threading.Event()
    store = QueueStore(tmp_path / "state")
    session = Session(fake_engine, settings, store=store)
    session.submit(ask("running"))
    session.submit(ask("waiting"))
    assert session.wants_runner()
    runner = threading.Thread(target=session.run_next)
    runner.start()
    assert fake_engine.at_gate.wait(5) and session.flush()
    kept = [j["request"]["prompt"] for j in json.loads(store.path.read_text())["jobs"]]
    assert kept == ["running", "waiting"], "a crash now would lose neither"
    fake_engine.gate.set()
    runner.join(5)
    assert session.flush()
    assert [j["request"]["prompt"] for j in json.loads(store.path.read_text())["jobs"]] == ["waiting"]


def test_an_unreadable_queue_file_is_reported_and_left_in_place(fake_engine, settings, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "queue-bad.json").write_text("{not json")
    (state / "queue-odd.json").write_text('{"jobs": [{"request": {"prompt": "ok", "task": "interior"}}, {"x": 1}]}')
    session = Session(fake_engine, settings, store=QueueStore(state))
    count, problems = session.adopt(QueueStore(state).orphans())
    assert count == 1
    assert any("queue-bad.json: not readable" in p for p in problems)
    assert any("queue-odd.json: a job could not be read" in p for p in problems)
    assert (state / "queue-bad.json").exists() and (state / "queue-odd.json").exists()
    left = json.loads((state / "queue-odd.json").read_text())["jobs"]
    assert left == [{"x": 1}], "the job adopted is not offered twice; the one not read stays"


def test_a_queue_folder_that_cannot_be_written_is_reported(fake_engine, settings, tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    session = Session(fake_engine, settings, store=QueueStore(blocked / "state"))
    session.submit(ask())
    assert not session.flush()
    assert session.store_error is not None and "could not write the queue" in session.store_error


def test_an_engine_error_on_switch_fails_the_job_with_the_reason(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    job = session.submit(ask(task="floorplan"))
    fake_engine.switch_task = _refuse
    run_all(session)
    assert job.state is JobState.FAILED and "could not switch to task floorplan" in (job.error or "")


def _refuse(name: str, on_progress=None):
    raise EngineError(f"adapter for {name} is missing")


def test_a_job_cancelled_just_before_quitting_is_not_kept(fake_engine, settings, tmp_path: Path) -> None:
    # Cancel asks the running job to stop within one step; a quit in that step must not bring
    # it back as a job to resume, while a job merely stopped by the quit is kept.
    fake_engine.gate = threading.Event()
    store = QueueStore(tmp_path / "state")
    session = Session(fake_engine, settings, store=store)
    job = session.submit(ask("cancelled"))
    session.submit(ask("kept"))
    assert session.wants_runner()
    runner = threading.Thread(target=session.run_next)
    runner.start()
    assert fake_engine.at_gate.wait(5)
    session.cancel(job.id)
    session.close()
    fake_engine.gate.set()
    runner.join(5)
    assert [j["request"]["prompt"] for j in json.loads(store.path.read_text())["jobs"]] == ["kept"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"task": "kitchen"}, "unknown task 'kitchen'"),
        ({"width": 500}, "multiple of 8"),
        ({"init_image": "/nowhere/sketch.png"}, "sketch.png"),
    ],
)
def test_a_request_no_engine_would_run_is_refused_before_it_is_queued(fake_engine, settings, changes, words) -> None:
    """Every front end goes through the same check: the TUI queued such requests (the CLI checked
    them itself) and they failed only when they ran."""
    session = Session(fake_engine, settings)
    for submit in (session.submit, lambda request: session.submit_batch(request, 3)):
        with pytest.raises(EngineError, match=words):
            submit(ask(**changes))
    assert session.jobs() == []
