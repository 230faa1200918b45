"""The queue the user's engine keeps: one Session (jobs/session.py) in the engine's process, so
that what a user queued goes on when the window or the SSH link that queued it is gone.

Any client of the user's engine may submit to it, reorder, pause, cancel and retry (`session.*`
requests, answered at once by the transport's thread), and watch it: a watching client gets a
`session` event frame for each change (the jobs as they are now, the last ENDED_SHOWN ended ones
included), each step of the running job (with its preview, scaled to what the client asked for)
and each finished image (saved by the engine, where its submitter asked). The hub's worker runs
the jobs, taking turns with the clients' own calls (remote/server.py), so one engine serves both.

Only the user's engine hosts a Session: its only clients are its owner's, so a job may name the
owner's files (an init image, an output folder) as a local run would. A served engine (`serve
--http`, `--stdio`, Ray) refuses `session.*` requests.

Locks: the session's own lock is never held while this module takes the hub's (its change hook
only sets an event); frames go out from the hub's worker (steps, results) and from one thread of
this module's (the job lists, coalesced: many changes in a row send the newest list once).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from spatiora_tui.engine.api import EngineError, GenerationRequest
from spatiora_tui.jobs import events
from spatiora_tui.jobs.job import Job
from spatiora_tui.jobs.session import MAX_BATCH, Session
from spatiora_tui.jobs.sweep import Axis, SweepError
from spatiora_tui.remote.wire import PREVIEW_FORMATS, WireError, decode_as, encode, image_bytes


class Connection(Protocol):
    """A client of the hub (remote/server.py's Connection), as far as this module needs one."""

    #: How the other clients are told of it ("spatiora generate on /dev/pts/3").
    label: str

    def answer(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Send a frame to the client (ignored once it is gone)."""


#: Ended jobs a job list shows (the newest); the running and waiting ones are always shown.
ENDED_SHOWN = 100


class Refusal(Exception):
    """A session request that cannot be done; the message says why and what to do."""


@dataclasses.dataclass
class Watch:
    """What one watching client asked for."""

    preview_side: int = 256
    preview_format: str = "jpeg"
    #: Whether finished images travel too (a window shows them; a command has the file).
    images: bool = False


class HostedSession:
    """A Session run by a Hub's worker and shown to its watching clients (module docstring)."""

    def __init__(self, session: Session, kick: Callable[[], None], log: Callable[[str], None] | None = None) -> None:
        """`kick`: wakes the hub's worker (new work may have come); `log`: the engine's log."""
        self.session = session
        self._kick = kick
        self._log = log or (lambda _text: None)
        self._watchers: dict[Connection, Watch] = {}
        self._lock = threading.Lock()
        self._running = False  # the hub's worker holds the session's runner role
        self._changed = threading.Event()
        self._snapshots = threading.Lock()
        self._seq = 0
        self._closed = False
        session.on_change = self._changed.set
        self._thread = threading.Thread(target=self._tell_changes, name="spatiora-session-events", daemon=True)
        self._thread.start()

    # -- the hub's worker -----------------------------------------------------------------------

    def has_work(self) -> bool:
        """Whether a job (or a task switch) is due; called on the hub's worker."""
        if not self._running:
            self._running = self.session.wants_runner()
        return self._running

    def run_one(self) -> None:
        """Run the next job to its end (on the hub's worker); the clients' calls take the next turn.
        Jobs taken up from a queue file may come before any client has loaded a model: the
        configured one is loaded first (when that fails, the queue is paused, saying why)."""
        engine = self.session.engine
        if engine.model is None:
            self._log("loading the model for the queue's jobs")
            try:
                engine.load(on_progress=self._log)
            except EngineError as exc:
                self._log(f"the queue is paused: the model did not load ({exc})")
                self.session.pause()  # run_next below finds nothing to run and lets the role go
        try:
            more = self.session.run_next(self._emit)
        except Exception:
            self.session.release_runner()
            self._running = False
            raise
        if not more:
            self._running = False

    @property
    def busy(self) -> bool:
        """A job runs or waits, paused ones too: the queue is not empty, so the engine does not
        exit for being idle, whoever is connected."""
        return self.session.busy or bool(self.session.waiting())

    # -- requests --------------------------------------------------------------------------------

    def handle(self, connection: Connection, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one `session.*` request (on the transport's thread); Refusal saying why not."""
        kind = str(message["type"]).removeprefix("session.")
        session = self.session
        if kind == "watch":
            self._watch(connection, message)
            return self.snapshot()
        if kind == "unwatch":
            with self._lock:
                self._watchers.pop(connection, None)
            return {}
        if kind == "jobs":
            return self.snapshot()
        if kind == "submit":
            jobs = self._submit(message, connection.label)
            return {"jobs": [job.id for job in jobs], "views": [job.to_view() for job in jobs]}
        if kind == "save_again":
            saved: list[dict[str, Any]] = []
            left = session.save_again(lambda event: saved.append(_saved_again(event)))
            return {"saved": saved, "left": left}
        if kind in ("cancel", "move", "retry"):
            job_id = message.get("job")
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                raise Refusal(f"session.{kind} needs a job number")
            if kind == "cancel":
                return {"done": session.cancel(job_id, by=connection.label)}
            if kind == "move":
                delta = message.get("delta")
                if not isinstance(delta, int) or isinstance(delta, bool):
                    raise Refusal("session.move needs a whole number of places to move by")
                return {"done": session.move(job_id, delta)}
            again = session.retry(job_id)
            self._kick()
            return {"job": again.id, "view": again.to_view()} if again is not None else {"job": None}
        if kind == "cancel_all":
            return {"count": session.cancel_all()}
        if kind == "pause":
            session.pause()
            return {}
        if kind == "resume":
            session.resume()
            self._kick()
            return {}
        if kind == "switch":
            task = message.get("task")
            if not isinstance(task, str):
                raise Refusal("session.switch needs a task name")
            session.request_switch(task)
            self._kick()
            return {}
        raise Refusal(f"unknown session request {message['type']!r}")

    def _watch(self, connection: Connection, message: dict[str, Any]) -> None:
        side, fmt = message.get("preview_side", 256), message.get("preview_format", "jpeg")
        if not isinstance(side, int) or isinstance(side, bool) or not 0 <= side <= 4096:
            raise Refusal("preview_side must be a whole number of pixels, 0 to 4096")
        if fmt not in PREVIEW_FORMATS:
            raise Refusal(f"unknown preview format {fmt!r}: one of {', '.join(PREVIEW_FORMATS)}")
        with self._lock:
            self._watchers[connection] = Watch(side, fmt, bool(message.get("images")))

    def _submit(self, message: dict[str, Any], by: str) -> list[Job]:
        try:
            request = decode_as(GenerationRequest, message.get("request"))
        except (WireError, TypeError, ValueError, RecursionError) as exc:
            raise Refusal(f"bad request: {exc}") from None
        count = message.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BATCH:
            raise Refusal(f"count must be a whole number from 1 to {MAX_BATCH}")
        sweep = message.get("sweep")
        if sweep is not None and count != 1:
            raise Refusal("a sweep makes one image per cell: count must be 1")
        output = None
        folder, name = message.get("output_dir"), message.get("output_name")
        if folder is not None:
            if not isinstance(folder, str) or not Path(folder).is_absolute():
                raise Refusal("output_dir must be an absolute folder path")
            if name is not None and not isinstance(name, str):
                raise Refusal("output_name must be a file name")
            output = (Path(folder), name)
        try:
            if sweep is not None:
                jobs = self.session.submit_sweep(request, read_axes(sweep), output, by)
            else:
                jobs = self.session.submit_batch(request, count, output, by)
        except (EngineError, SweepError) as exc:
            raise Refusal(str(exc)) from None
        self._kick()
        return jobs

    def forget(self, connection: Connection) -> None:
        """The client is gone: it watches no more (its jobs go on)."""
        with self._lock:
            self._watchers.pop(connection, None)

    def snapshot(self) -> dict[str, Any]:
        """The jobs as they are now: the newest ENDED_SHOWN ended ones, the running one, the
        waiting ones in queue order; whether the queue is paused; and `seq`, which grows with
        each list (a window keeps the newest, whichever way it came)."""
        with self._snapshots:
            jobs = self.session.jobs()
            ended = [job for job in jobs if job.state.ended][-ENDED_SHOWN:]
            shown = ended + [job for job in jobs if not job.state.ended]
            views = [job.to_view() for job in shown]
            self._seq += 1
            return {"jobs": views, "paused": self.session.paused, "seq": self._seq}

    def close(self) -> None:
        self._closed = True
        self._changed.set()
        self.session.close()
        self._thread.join(timeout=5)

    # -- telling the watchers -------------------------------------------------------------------

    def _view(self, job_id: int) -> dict[str, Any]:
        """The job as it is now: a window shows it before the event it comes with."""
        return self.session.job(job_id).to_view()

    def _log_event(self, event: events.SessionEvent) -> None:
        if isinstance(event, events.JobStarted):
            self._log(f"job {event.job_id} ({event.task}): started")
        elif isinstance(event, events.JobFinished):
            result = event.result
            if event.path is not None:
                ended = f"saved {event.path}"
            elif result.cancelled:
                ended = event.cancelled_words()
            else:
                ended = f"not saved: {event.save_error}"
            self._log(f"job {event.job_id}: {ended}")
        elif isinstance(event, events.JobFailed):
            self._log(f"job {event.job_id}: failed: {event.error}")

    def _tell_changes(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            if self._closed:
                return
            self._kick()  # a job submitted or resumed elsewhere may be due
            with self._lock:
                watched = bool(self._watchers)
            if watched:  # a list is built only for someone to read it
                self._send({"what": "jobs", **self.snapshot()})

    def _send(self, fields: dict[str, Any], blob_for: Callable[[Watch], bytes] | None = None) -> None:
        with self._lock:
            watchers = list(self._watchers.items())
        blobs: dict[tuple[int, str, bool], bytes] = {}
        for connection, watch in watchers:
            blob = b""
            if blob_for is not None:
                key = (watch.preview_side, watch.preview_format, watch.images)  # watchers alike share one
                if key not in blobs:
                    blobs[key] = blob_for(watch)
                blob = blobs[key]
            connection.answer({"type": "event", "id": None, "event": "session", **fields}, blob)

    def _emit(self, event: events.SessionEvent) -> None:
        """A session event as a frame to every watcher (on the hub's worker), and a line in the
        engine's log for each job's start and end."""
        self._log_event(event)
        if isinstance(event, events.JobStarted):
            started = {"job": event.job_id, "task": event.task, "steps": event.steps, "view": self._view(event.job_id)}
            size = {"width": event.width, "height": event.height, "compiles_first": event.compiles_first}
            self._send({"what": "started", **started, **size})
        elif isinstance(event, events.JobStepped):
            preview = event.preview
            step = {"step": preview.step, "total": preview.total, "elapsed_s": preview.elapsed_s, "rate": event.rate}

            def scaled(watch: Watch) -> bytes:
                image = preview.image
                if image is None or watch.preview_side == 0:
                    return b""
                image = image.copy()
                image.thumbnail((watch.preview_side, watch.preview_side))
                return image_bytes(image, watch.preview_format)

            self._send({"what": "step", "job": event.job_id, **step}, scaled)
        elif isinstance(event, events.JobFinished):
            result = event.result
            fields = {
                "what": "finished",
                "job": event.job_id,
                "result": encode(dataclasses.replace(result, image=None)),
                "path": str(event.path) if event.path is not None else None,
                "save_error": event.save_error,
                "cancelled_by": event.cancelled_by,
                "view": self._view(event.job_id),
            }

            def image(watch: Watch) -> bytes:
                # An image the engine could not save travels to every watcher: the one that
                # asked for it keeps it (spatiora generate puts it in the cache folder).
                wanted = watch.images or event.save_error is not None
                return image_bytes(result.image) if wanted and result.image is not None else b""

            self._send(fields, image)
        elif isinstance(event, events.JobFailed):
            failed = {"job": event.job_id, "task": event.task, "error": event.error, "oom": event.out_of_memory}
            self._send({"what": "failed", **failed, "view": self._view(event.job_id)})
        elif isinstance(event, events.TaskSwitched):
            self._send({"what": "switched", "switch": encode(event.switch), "job": event.job_id})
        elif isinstance(event, events.TaskSwitchFailed):
            self._send({"what": "switch_failed", "task": event.task, "error": event.error, "job": event.job_id})
        elif isinstance(event, events.GroupFinished):
            path = str(event.path) if event.path is not None else None
            self._send({"what": "group", "group": event.group, "path": path, "error": event.error})


# -- the client's side ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QueueShown:
    """The engine's jobs as they are now (a `jobs` frame): newest `seq` wins."""

    jobs: tuple[Job, ...]
    paused: bool
    seq: int


@dataclasses.dataclass(frozen=True)
class JobShown:
    """One job as it is now (it comes before the event that changed it)."""

    job: Job


#: What a watching client is told: the queue as it is, one job, or one of the session's events.
SessionNews = QueueShown | JobShown | events.SessionEvent


def read_news(frame: dict[str, Any], blob: bytes) -> list[SessionNews]:
    """A `session` event frame as what it says: the job it is about as it is now (JobShown),
    then the event (nothing for one this client does not know, from a newer engine). WireError
    (or KeyError, TypeError, ValueError) for one that cannot be read."""
    event = _read_event(frame, blob)
    view = frame.get("view")
    shown: list[SessionNews] = [JobShown(Job.from_view(view))] if isinstance(view, dict) else []
    return [*shown, event] if event is not None else shown


def _read_event(frame: dict[str, Any], blob: bytes) -> SessionNews | None:
    from spatiora_tui.engine.api import AdapterSwitch, GenerationResult, StepPreview
    from spatiora_tui.remote.wire import image_from

    what = frame.get("what")
    if what == "jobs":
        jobs = tuple(Job.from_view(view) for view in frame["jobs"])
        return QueueShown(jobs, bool(frame.get("paused")), int(frame.get("seq") or 0))
    job = int(frame.get("job") or 0)
    if what == "started":
        size = int(frame.get("width") or 0), int(frame.get("height") or 0)
        return events.JobStarted(job, str(frame["task"]), int(frame["steps"]), *size, bool(frame.get("compiles_first")))
    if what == "step":
        image = image_from(blob) if blob else None
        preview = StepPreview(int(frame["step"]), int(frame["total"]), image, float(frame["elapsed_s"]))
        return events.JobStepped(job, preview, float(frame.get("rate") or 0.0))
    if what == "finished":
        result = decode_as(GenerationResult, frame["result"])
        if blob:
            result = dataclasses.replace(result, image=image_from(blob))
        path = Path(frame["path"]) if frame.get("path") else None
        return events.JobFinished(job, result, path, frame.get("save_error"), str(frame.get("cancelled_by") or ""))
    if what == "failed":
        return events.JobFailed(job, str(frame["task"]), str(frame["error"]), bool(frame.get("oom")))
    if what == "switched":
        return events.TaskSwitched(decode_as(AdapterSwitch, frame["switch"]), job)
    if what == "switch_failed":
        return events.TaskSwitchFailed(str(frame["task"]), str(frame["error"]), job)
    if what == "group":
        path = Path(frame["path"]) if frame.get("path") else None
        return events.GroupFinished(str(frame["group"]), path, frame.get("error"))
    return None


def axes_wire(axes: list[Axis]) -> list[dict[str, Any]]:
    """A sweep's axes as a submit carries them."""
    return [{"kind": axis.kind, "values": list(axis.values), "adapter": axis.adapter} for axis in axes]


def read_axes(wire: Any) -> list[Axis]:
    """A submit's sweep axes (Refusal when they are not)."""
    if not isinstance(wire, list) or not 1 <= len(wire) <= 3:
        raise Refusal("sweep must list one to three axes")
    axes = []
    for item in wire:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Refusal("each sweep axis needs a kind and a list of values")
        axes.append(Axis(str(item.get("kind")), tuple(values), str(item.get("adapter") or "")))
    return axes


def _saved_again(event: events.SessionEvent) -> dict[str, Any]:
    assert isinstance(event, events.ImageSaved)
    return {"path": str(event.path) if event.path is not None else None, "error": event.error}
