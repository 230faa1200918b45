"""SessionMirror (remote/mirror.py): a window's view of the user's engine's queue, on a Hub that
hosts a Session on the fake engine, through a link the test can drop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.jobs import events
from spatiora_tui.jobs.job import Job, JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.remote.hosted import QueueShown
from spatiora_tui.remote.mirror import SessionMirror
from spatiora_tui.remote.server import Hub
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings
from tests.unit.test_link_formats import DroppableLink


def until(check: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_keys_on_a_dropped_link_say_so_and_never_raise(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    gate = threading.Event()
    fake = FakeEngine(settings, gate=gate)
    fake.load()
    hub = Hub(fake)
    hub.host(Session(fake, settings, store=QueueStore(tmp_path / "queue")))
    links: list[DroppableLink] = []

    def open_link(on_frame: Any, on_end: Any) -> DroppableLink:
        links.append(DroppableLink(hub, on_frame, on_end))
        return links[-1]

    engine = RemoteEngine(open_link, resume=False)
    said: list[str] = []
    seen: list[Any] = []
    mirror = SessionMirror(engine, settings, say=said.append)
    try:
        mirror.watch(seen.append)
        (job,) = mirror.submit_batch(GenerationRequest(prompt="a loft", task="base", seed=1, steps=4), 1)
        assert fake.at_gate.wait(5)
        until(lambda: mirror.running is not None, "the job to show as running")
        links[-1].drop()
        assert mirror.cancel(job.id) is False and mirror.move(job.id, 1) is False and mirror.retry(job.id) is None
        mirror.pause()
        mirror.resume()
        assert mirror.cancel_all() == 0 and mirror.save_again() == 0
        assert said and all("your engine did not take that" in line for line in said)
    finally:
        gate.set()
        mirror.close()
        engine.close()
        hub.close()


def test_a_job_whose_engine_died_while_it_ran_is_told_as_failed(tmp_path: Path) -> None:
    """The engine that takes up the queue lists it failed, and no event comes for it: the
    window is told, so its preview does not stay on "generating" forever."""
    seen: list[Any] = []
    mirror = SessionMirror(None, small_settings(tmp_path))  # type: ignore[arg-type]  # news only: no link
    mirror._listener = seen.append
    request = GenerationRequest(prompt="a loft", task="base", seed=1)
    running = Job(3, request, state=JobState.RUNNING, started=1.0)
    mirror._news(QueueShown((running,), False, 1))
    assert isinstance(seen[0], events.JobStarted) and seen[0].job_id == 3
    failed = Job(3, request, state=JobState.FAILED, error="the engine was killed by SIGKILL")
    mirror._link_changed("the engine was killed")
    mirror._news(QueueShown((failed,), False, 1))
    told = [news for news in seen if isinstance(news, events.JobFailed)]
    assert len(told) == 1 and told[0].error == "the engine was killed by SIGKILL"
    mirror._news(QueueShown((failed,), False, 2))
    assert len([news for news in seen if isinstance(news, events.JobFailed)]) == 1, "once"


def test_a_retry_from_a_window_is_the_engines_new_job(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    fake = FakeEngine(settings)
    fake.load()
    hub = Hub(fake)
    hub.host(Session(fake, settings, store=QueueStore(tmp_path / "queue")))
    engine = RemoteEngine(lambda on_frame, on_end: DroppableLink(hub, on_frame, on_end))
    mirror = SessionMirror(engine, settings)
    try:
        mirror.watch(lambda event: None)
        mirror.pause()
        (job,) = mirror.submit_batch(GenerationRequest(prompt="a loft", task="base", seed=4, steps=2), 1)
        assert mirror.cancel(job.id)
        again = mirror.retry(job.id)
        assert again is not None and again.id != job.id and again.request.seed == 4
        assert again.state is JobState.PAUSED, "queued as the engine queued it: the queue is paused"
        assert mirror.job(again.id).request.seed == 4  # the window holds it before the next list
    finally:
        mirror.close()
        engine.close()
        hub.close()
