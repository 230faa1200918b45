"""The queue the user's engine keeps (remote/hosted.py), in-process: a Hub hosting a Session on
the fake engine, with clients whose frames land in a queue. What a window or a command sees:
its jobs run and are saved by the engine whoever is still connected, every watcher is told the
same, and the jobs take turns with the clients' own calls."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from spatiora_tui.jobs.events import JobFinished, JobStarted, JobStepped
from spatiora_tui.jobs.job import Job, JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.remote.hosted import QueueShown, read_news
from spatiora_tui.remote.server import Connection, Hub
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings


class Client:
    """A connection whose frames (and their payloads) land in a queue."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.frames: queue.Queue[tuple[dict[str, Any], bytes]] = queue.Queue()
        self.connection: Connection = hub.connect(name, lambda message, blob: self.frames.put((message, blob)))
        self.ids = iter(range(1, 10_000))
        self.news: list[Any] = []

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        rid = next(self.ids)
        self.connection.receive({**message, "id": rid})
        while True:
            frame, blob = self.frames.get(timeout=10)
            if frame.get("id") == rid and frame["type"] in ("ok", "error"):
                return frame
            self._keep(frame, blob)

    def _keep(self, frame: dict[str, Any], blob: bytes) -> None:
        if frame.get("event") == "session":
            self.news.append((frame, blob))

    def until(self, what: str, test: Any = None, timeout: float = 20.0) -> dict[str, Any]:
        """The next session frame saying `what` (and passing `test`)."""
        while True:
            frame, blob = self.frames.get(timeout=timeout)
            self._keep(frame, blob)
            if frame.get("event") == "session" and frame["what"] == what and (test is None or test(frame)):
                return frame


def request(prompt: str = "a loft", steps: int = 3, seed: int = 7) -> dict[str, Any]:
    return {"prompt": prompt, "task": "base", "seed": seed, "steps": steps}


@pytest.fixture
def hosted(tmp_path: Path):
    settings = small_settings(tmp_path)
    gate = threading.Event()
    engine = FakeEngine(settings, gate=gate)
    engine.load()
    hub = Hub(engine)
    session = Session(engine, settings, store=QueueStore(tmp_path / "queue"))
    hub.host(session)
    yield hub, engine, gate, session
    gate.set()
    hub.close()


def test_a_batch_is_made_and_saved_by_the_engine_after_its_submitter_leaves(hosted, tmp_path: Path) -> None:
    hub, engine, gate, session = hosted
    command, window = Client(hub, "command"), Client(hub, "window")
    assert window.ask({"type": "session.watch", "preview_side": 64})["type"] == "ok"
    out = tmp_path / "renders"
    reply = command.ask(
        {"type": "session.submit", "request": request(), "count": 4, "output_dir": str(out), "output_name": "loft"}
    )
    assert reply["type"] == "ok" and len(reply["jobs"]) == 4
    assert engine.at_gate.wait(5)
    command.connection.close()  # the terminal closed, or the SSH link dropped
    gate.set()
    group = window.until("group")
    assert group["path"] is not None and Path(group["path"]).parent == out
    saved = sorted(p.name for p in out.glob("loft-?.png"))
    assert saved == ["loft-1.png", "loft-2.png", "loft-3.png", "loft-4.png"], "every image, each once"
    assert [r.seed for r in engine.requests] == [7, 8, 9, 10]
    states = {job.id: job.state for job in session.jobs()}
    assert set(states.values()) == {JobState.DONE}
    # The window was told each step (with a preview scaled as it asked) and each image.
    steps = [(frame, blob) for frame, blob in window.news if frame["what"] == "step"]
    assert len(steps) == 4 * 3 and all(blob for _, blob in steps)
    (news,) = read_news(*steps[0])
    assert isinstance(news, JobStepped) and news.preview.image is not None
    assert max(news.preview.image.size) <= 64
    finished = [frame for frame, _ in window.news if frame["what"] == "finished"]
    assert [Path(f["path"]).name for f in finished] == saved


def test_every_watcher_gets_the_same_queue_and_the_newest_list_wins(hosted) -> None:
    hub, engine, gate, _ = hosted
    first, second = Client(hub, "tui-1"), Client(hub, "tui-2")
    for client in (first, second):
        client.ask({"type": "session.watch", "preview_side": 0})
    ids = first.ask({"type": "session.submit", "request": request(steps=5), "count": 3})["jobs"]
    assert engine.at_gate.wait(5)
    moved = second.ask({"type": "session.move", "job": ids[2], "delta": -1})
    assert moved["done"] is True, "the second window reorders the first's jobs"

    def order(frame: dict[str, Any]) -> bool:
        waiting = [job["id"] for job in frame["jobs"] if job["state"] == "queued"]
        return waiting == [ids[2], ids[1]]

    for client in (first, second):
        (shown,) = read_news(client.until("jobs", order), b"")
        assert isinstance(shown, QueueShown)
        assert [job.state for job in shown.jobs] == [JobState.RUNNING, JobState.QUEUED, JobState.QUEUED]
        assert shown.jobs[0].request.prompt == "a loft"
    gate.set()
    last = first.until("finished", lambda f: f["job"] == ids[1])
    assert last["path"] is not None
    assert [r.seed for r in engine.requests] == [7, 9, 8], "the moved job ran second"


def test_a_stepped_preview_is_sent_without_an_image_when_none_was_asked_for(hosted) -> None:
    hub, _, gate, _ = hosted
    gate.set()
    watcher = Client(hub, "cli")
    watcher.ask({"type": "session.watch", "preview_side": 0})
    watcher.ask({"type": "session.submit", "request": request(steps=2)})
    watcher.until("finished")
    steps = [blob for frame, blob in watcher.news if frame["what"] == "step"]
    finished = [blob for frame, blob in watcher.news if frame["what"] == "finished"]
    assert steps == [b"", b""] and finished == [b""], "a command that watches pays for no pictures"


def test_session_jobs_and_clients_calls_take_turns_on_the_engine(hosted) -> None:
    hub, engine, gate, _ = hosted
    alice = Client(hub, "alice")
    alice.ask({"type": "session.watch", "preview_side": 0})
    alice.ask({"type": "session.submit", "request": request("queued", steps=3), "count": 3})
    assert engine.at_gate.wait(5)
    rids = []
    for i in range(2):
        rid = next(alice.ids)
        alice.connection.receive({"type": "generate", "id": rid, "request": request(f"call{i}", steps=3)})
        rids.append(rid)
    gate.set()
    alice.until("group")
    prompts = [r.prompt for r in engine.requests]
    assert prompts == ["queued", "call0", "queued", "call1", "queued"]


def test_cancel_pause_resume_and_retry_reach_the_engines_queue(hosted) -> None:
    hub, engine, gate, session = hosted
    tui = Client(hub, "tui")
    tui.ask({"type": "session.watch", "preview_side": 0})
    ids = tui.ask({"type": "session.submit", "request": request(steps=4), "count": 3})["jobs"]
    assert engine.at_gate.wait(5)
    assert tui.ask({"type": "session.pause"})["type"] == "ok"
    assert tui.ask({"type": "session.cancel", "job": ids[0]})["done"] is True  # the running one
    gate.set()
    tui.until("finished", lambda f: f["job"] == ids[0])
    assert session.paused and [job.state for job in session.waiting()] == [JobState.PAUSED, JobState.PAUSED]
    again = tui.ask({"type": "session.retry", "job": ids[0]})["job"]
    assert again not in ids
    tui.ask({"type": "session.resume"})
    tui.until("finished", lambda f: f["job"] == again)
    assert {job.id: job.state for job in session.jobs()}[ids[0]] is JobState.CANCELLED
    assert tui.ask({"type": "session.cancel_all"})["type"] == "ok"


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"request": request(), "count": 0}, "count must be a whole number from 1 to 100"),
        ({"request": request(), "count": "3"}, "count must be a whole number"),
        ({"request": request(), "output_dir": "renders"}, "output_dir must be an absolute folder path"),
        ({"request": {"prompt": "x", "task": "nope"}}, "nope"),
        ({"request": {"prompt": "x", "task": "base", "steps": "20"}}, "steps"),
    ],
)
def test_a_submit_that_cannot_run_is_refused_saying_why(hosted, fields: dict[str, Any], said: str) -> None:
    hub, engine, _, session = hosted
    reply = Client(hub, "cli").ask({"type": "session.submit", **fields})
    assert reply["type"] == "error" and reply["kind"] == "refused" and said in reply["message"]
    assert session.jobs() == [] and engine.requests == []


def test_a_served_engine_keeps_no_queue_and_says_so(tmp_path: Path) -> None:
    engine = FakeEngine(small_settings(tmp_path))
    engine.load()
    hub = Hub(engine)
    try:
        client = Client(hub, "stranger")
        hello = client.ask({"type": "hello"})
        assert hello["queue"] is False
        reply = client.ask({"type": "session.submit", "request": request()})
        assert reply["type"] == "error" and "keeps no queue of its own" in reply["message"]
    finally:
        hub.close()


def test_what_waits_when_the_engine_stops_is_in_its_queue_file_for_the_next(hosted, tmp_path: Path) -> None:
    hub, engine, gate, session = hosted
    client = Client(hub, "cli")
    client.ask({"type": "session.submit", "request": request(steps=4), "count": 3})
    assert engine.at_gate.wait(5)
    threading.Timer(0.2, gate.set).start()  # the step under way ends; the job stops after it
    hub.close()  # SIGTERM: the running job is stopped, not cancelled
    follower = Session(engine, session.settings, store=QueueStore(tmp_path / "queue2"))
    count, problems = follower.adopt(QueueStore(tmp_path / "queue").orphans())
    assert (count, problems) == (3, [])
    assert [job.request.seed for job in follower.waiting()] == [7, 8, 9]
    follower.close()


def test_an_image_the_engine_could_not_save_reaches_the_watchers_and_is_saved_again(hosted, tmp_path: Path) -> None:
    hub, _, gate, session = hosted
    gate.set()
    blocked = tmp_path / "renders"
    blocked.write_text("a file where the folder should be")
    window = Client(hub, "tui")
    window.ask({"type": "session.watch", "preview_side": 0})  # asks for no images...
    window.ask({"type": "session.submit", "request": request(steps=2), "output_dir": str(blocked)})
    finished = window.until("finished")
    assert finished["path"] is None and "renders" in finished["save_error"]
    blob = next(blob for frame, blob in window.news if frame["what"] == "finished")
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "...but one the engine could not save comes to every watcher"
    assert len(session.unsaved) == 1
    blocked.unlink()
    blocked.mkdir()
    again = window.ask({"type": "session.save_again"})
    assert again["left"] == 0 and len(again["saved"]) == 1 and Path(again["saved"][0]["path"]).parent == blocked


def test_a_paused_queue_keeps_the_engine_busy_so_it_does_not_exit_idle(hosted) -> None:
    hub, engine, gate, session = hosted
    client = Client(hub, "cli")
    client.ask({"type": "session.pause"})
    client.ask({"type": "session.submit", "request": request()})
    client.connection.close()
    assert hub.busy(), "a job waits (paused): the queue is not empty"
    session.cancel_all()
    assert not hub.busy()


def test_a_watcher_is_told_the_size_a_job_draws_at_and_that_a_compiled_unet_compiles_first(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    engine = FakeEngine(settings, compiled="max-autotune-no-cudagraphs")
    engine.load()
    hub = Hub(engine)
    hub.host(Session(engine, settings))
    try:
        window = Client(hub, "window")
        window.ask({"type": "session.watch", "preview_side": 0})
        for width in (64, 64, 96):
            window.ask({"type": "session.submit", "request": {**request(), "width": width, "height": 64}})
        starts = []
        for _ in range(3):
            news = read_news(window.until("started"), b"")
            starts += [event for event in news if isinstance(event, JobStarted)]
        assert [(e.width, e.height, e.compiles_first) for e in starts] == [
            (64, 64, True),
            (64, 64, False),
            (96, 64, True),
        ]
    finally:
        hub.close()


def test_each_job_says_who_queued_it_and_keeps_it_in_the_queue_file_and_on_retry(hosted) -> None:
    hub, engine, gate, session = hosted
    command = Client(hub, "spatiora generate on /dev/pts/3")
    ids = command.ask({"type": "session.submit", "request": request(), "count": 2})["jobs"]
    (shown,) = read_news(command.ask({"type": "session.jobs"}) | {"what": "jobs"}, b"")
    assert isinstance(shown, QueueShown)
    assert [job.by for job in shown.jobs if job.id in ids] == ["spatiora generate on /dev/pts/3"] * 2
    job = session.job(ids[0])
    assert Job.from_record(job.to_record(), 99).by == "spatiora generate on /dev/pts/3"
    assert engine.at_gate.wait(5), "the first job runs; the second waits"
    assert session.cancel(ids[1])
    again = session.retry(ids[1])
    assert again is not None and again.by == "spatiora generate on /dev/pts/3"
    gate.set()


def test_a_job_another_client_cancels_says_who_to_the_one_that_queued_it(hosted) -> None:
    hub, engine, gate, session = hosted
    command, window = Client(hub, "spatiora generate on /dev/pts/3"), Client(hub, "spatiora on /dev/pts/7")
    command.ask({"type": "session.watch", "preview_side": 0})
    first, second, third = command.ask({"type": "session.submit", "request": request(), "count": 3})["jobs"]
    assert engine.at_gate.wait(5)
    assert window.ask({"type": "session.cancel", "job": second})["done"], "a waiting one"
    assert window.ask({"type": "session.cancel", "job": first})["done"], "the running one"
    assert command.ask({"type": "session.cancel", "job": third})["done"], "its own"
    gate.set()
    finished = command.until("finished", lambda frame: frame["job"] == first)
    assert finished["cancelled_by"] == "spatiora on /dev/pts/7"
    (_, event) = read_news(finished, b"")
    assert isinstance(event, JobFinished) and event.cancelled_by == "spatiora on /dev/pts/7"
    assert session.job(second).cancelled_by == "spatiora on /dev/pts/7"
    assert session.job(third).cancelled_by == "", "a client cancelling its own job is not news"
