"""RemoteEngine: the Engine protocol, answered by an engine server in another process: `spatiora
serve --stdio` started here or through the user's own ssh (a PipeLink), or `spatiora serve --http`
over a websocket (remote/websocket.py).

One reader thread per link takes the server's frames and hands each to the request of its id;
calls block like LocalEngine's do. A cancel event set during generate() sends a `cancel` frame:
the server stops within one step, as it would locally. An init image is sent with its request, so
a path on this machine works against a server on another.

When the link drops, the call that was waiting fails saying so, and the next call opens a new
link (loading the model again if the new server has none loaded).
"""

from __future__ import annotations

import collections
import dataclasses
import getpass
import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from spatiora_tui import __version__
from spatiora_tui.config import TaskSettings
from spatiora_tui.engine.api import (
    AdapterSwitch,
    EngineError,
    EngineOOM,
    GenerationRequest,
    GenerationResult,
    ModelChoice,
    ModelInfo,
    ModelSwitch,
    StepCallback,
    StepPreview,
)
from spatiora_tui.hw.sampler import HardwareSnapshot
from spatiora_tui.hw.telemetry import Listeners, Peak
from spatiora_tui.remote.frames import MAX_BLOB, FrameError, FrameWriter, read_frame
from spatiora_tui.remote.hosted import SessionNews, read_news
from spatiora_tui.remote.server import PROTOCOL
from spatiora_tui.remote.wire import WireError, decode, decode_as, encode, image_from
from spatiora_tui.units import MB

#: What a step preview is scaled to before it crosses the link (the pane shows a few hundred px).
PREVIEW_SIDE = 512
#: How it crosses (wire.PREVIEW_FORMATS): JPEG costs the server well under a millisecond a frame.
PREVIEW_FORMAT = "jpeg"
#: Bytes a new link is timed with, each way (an echo): about 0.4 s at connect on a 10 Mbit/s link.
PROBE_BYTES = 256 << 10
#: A link at least this fast (bytes/s; 200 Mbit/s) carries a finished image as raw pixels. A 512x512
#: PNG costs the two sides about 30 ms to encode and decode and saves, on a drawn image, about half
#: of its 768 KB: the link would carry that half in 15 ms (docs/scaling.md has the measurements).
RAW_ABOVE = 24 << 20

#: Where the frames of one call wait for it.
_Replies = queue.Queue[tuple[dict[str, Any], bytes]]
#: A link's reader hands each frame here...
OnFrame = Callable[[dict[str, Any], bytes], None]
#: ...and says once, at the end, why the link is gone.
OnEnd = Callable[[str], None]


class Link(Protocol):
    """A connection to an engine server that carries frames both ways."""

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Send one frame; OSError (or ValueError) once the link is gone."""

    def close(self) -> None:
        """End the link (the server stops what it runs for this client)."""


#: Opens a link whose frames go to OnFrame; EngineError when it cannot.
Opener = Callable[[OnFrame, OnEnd], Link]


class PipeLink:
    """Frames on the stdin/stdout of a process: `spatiora serve --stdio`, here or through ssh.
    What the process says on stderr (ssh's "connection refused", a config error) is kept to say
    why the link ended."""

    def __init__(self, argv: Sequence[str], on_frame: OnFrame, on_end: OnEnd) -> None:
        self.argv = list(argv)
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        except OSError as exc:
            raise EngineError(f"cannot start the engine server ({' '.join(self.argv)}): {exc}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._out = FrameWriter(self.proc.stdin)  # type: ignore[arg-type]
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._drainer.start()
        args = (self.proc.stdout, on_frame, on_end)
        threading.Thread(target=self._read, args=args, name="spatiora-remote", daemon=True).start()

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        self._out.send(message, blob)

    def close(self) -> None:
        """Stop the server: it ends when its stdin closes."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _read(self, stream: Any, on_frame: OnFrame, on_end: OnEnd) -> None:
        said = relay_frames(stream, on_frame)
        # The server's last words may still be on their way on stderr when stdout ends.
        self._drainer.join(timeout=5)
        on_end(said or self._gone())

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _gone(self) -> str:
        said = next((line for line in reversed(self._stderr) if line.strip()), "")
        return "the engine server stopped" + (f": {said}" if said else "; it said nothing")


def relay_frames(stream: Any, on_frame: OnFrame) -> str | None:
    """Hand each frame read from `stream` to `on_frame` until the stream ends or breaks; the
    server's last word (an error frame of no request) when it said one."""
    said = None
    try:
        while True:
            frame, payload = read_frame(stream)
            if frame.get("id") is None and frame.get("type") == "error":
                said = frame.get("message")
            on_frame(frame, payload)
    except (FrameError, OSError, ValueError):
        pass
    return said


def pipe(argv: Sequence[str]) -> Opener:
    """Open links by starting `argv` (e.g. ssh HOST spatiora serve --stdio)."""
    return lambda on_frame, on_end: PipeLink(argv, on_frame, on_end)


def upload(path: str) -> bytes:
    """The bytes of the init image at `path` (on this machine), to send with its request: the
    server opens no file a client names. EngineError in the engines' words when it cannot be."""
    from spatiora_tui.engine.init_image import peek_init_image

    peek_init_image(path)  # missing, a folder, not an image, too many pixels: said here
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read init image {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BLOB:
        raise EngineError(
            f"the init image {path} is {len(data) / MB:.0f} MB; the link to the engine carries at most "
            f"{MAX_BLOB >> 20} MB: save it smaller (it runs at about the task's size anyway)"
        )
    return data


def self_label() -> str:
    """How this process is named to the other clients of a shared engine: the command and its
    terminal ("spatiora on /dev/pts/3"), else its pid."""
    command = " ".join(["spatiora", *[a for a in sys.argv[1:2] if not a.startswith("-")]])
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            return f"{command} on {os.ttyname(stream.fileno())}"
        except (OSError, ValueError, AttributeError):
            continue
    return f"{command} (pid {os.getpid()})"


def client_name() -> str:
    """Who this client is to a shared server's round robin: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"


#: Calls that open a new link when the last one dropped: what the user asked for. Polls (state,
#: hardware, queue) do not, so a server that is down is not dialled twice a second (over ssh,
#: that could be a password prompt each time).
RECONNECTING = frozenset({"load", "switch_task", "models", "switch_model", "generate"})


class _LinkDown(Exception):
    """A frame could not be sent: the link is gone (the message says why)."""


#: Seconds a call may hear nothing before the client asks the server whether it still holds the
#: call (a running image sends a frame each step; a load, a line per stage)...
CHECK_S = 20.0
#: ...and after a cancel, when the server should answer within a step.
CHECK_CANCELLED_S = 3.0
#: Seconds the server has to answer that question (it answers at once, also mid-generation)
#: before it counts as gone.
ANSWER_S = 30.0


class _Watch:
    """A call's deadline: after CHECK_S with no frame, ask the server for its queue. No answer
    within ANSWER_S: the server is gone (the link is dropped, the call fails). An answer without
    the call's job: the server no longer holds it, and the call fails saying so, instead of
    waiting forever."""

    def __init__(self, engine: RemoteEngine, replies: queue.Queue[tuple[dict[str, Any], bytes]]) -> None:
        self._engine = engine
        self._replies = replies
        self._last = time.monotonic()
        self._job: int | None = None
        self._asked: tuple[float, int, queue.Queue[tuple[dict[str, Any], bytes]]] | None = None

    def heard(self, frame: dict[str, Any]) -> None:
        self._last = time.monotonic()
        if frame.get("type") == "queued" and isinstance(frame.get("job"), int):
            self._job = frame["job"]

    def check(self, cancelled: bool) -> None:
        now = time.monotonic()
        if self._asked is None:
            if now - self._last > (CHECK_CANCELLED_S if cancelled else CHECK_S):
                self._asked = (now, *self._engine._ask({"type": "queue"}))
            return
        sent, rid, answers = self._asked
        try:
            reply, _ = answers.get_nowait()
        except queue.Empty:
            if now - sent > ANSWER_S:
                why = f"the engine server has not answered for {ANSWER_S:.0f} s"
                self._engine._unresponsive(why)
                raise _LinkDown(why) from None
            return
        self._engine._forget(rid)
        self._asked, self._last = None, now
        jobs = reply.get("jobs") if reply.get("type") == "ok" else None
        # The call's own reply, sent before the server's answer, has arrived before it too.
        held = isinstance(jobs, list) and any(isinstance(job, dict) and job.get("job") == self._job for job in jobs)
        if self._job is not None and isinstance(jobs, list) and not held and self._replies.empty():
            raise EngineError("the engine server no longer holds this request (a fault on its side); run it again")

    def done(self) -> None:
        if self._asked is not None:
            self._engine._forget(self._asked[1])
            self._asked = None


class RemoteEngine:
    """An Engine whose work runs in an engine server, reached through the links `opener` opens."""

    def __init__(
        self,
        opener: Opener,
        preview_side: int = PREVIEW_SIDE,
        name: str | None = None,
        preview_format: str = PREVIEW_FORMAT,
        image_format: str = "auto",
        resume: bool = True,
        after_drop: str = "the next request reconnects",
        say: Callable[[str], None] | None = None,
        label: str | None = None,
    ) -> None:
        """`image_format`: how finished images cross: "png", "raw" pixels, or "auto" (raw on a
        link timed at RAW_ABOVE or faster). `resume`: generations still queued when the link
        drops wait through a reconnect (a server that outlives its links keeps them); without it
        they fail at once with the reason (the user's engine: its link drops only when it dies,
        and its queue with it). `say`: where words about the link go (an engine being started
        for it); a UI that takes over the terminal sets `say` to its own status line. `label`: how the
        server's other clients are told of this one when it changes what they share (its model)."""
        self._resume_parked = resume
        #: What the next call does about a dropped link, said after why it dropped.
        self.after_drop = after_drop
        self.say: Callable[[str], None] = say or (lambda _text: None)
        self._link_listeners: Listeners[str | None] = Listeners()
        self._model_listeners: Listeners[tuple[ModelInfo, str]] = Listeners()
        self._news_listeners: Listeners[SessionNews] = Listeners()
        self._watching: dict[str, Any] | None = None  # what session.watch asked, sent again on a new link
        #: Whether the server keeps a queue of its own (the user's engine): session() works.
        self.hosts_queue = False
        self.label = label or self_label()
        self._opener = opener
        self._image_format = image_format
        self._preview_side = preview_side
        self._preview_format = preview_format
        self.name = name or client_name()
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue[tuple[dict[str, Any], bytes]]] = {}
        self._lock = threading.Lock()
        self._tasks: tuple[TaskSettings, ...] = ()
        self._active: str | None = None
        self._model: ModelInfo | None = None
        self._loaded: tuple[str | None] | None = None  # (source,) of the last load(), once one ran
        self._chosen: str | None = None  # the model this client last switched the engine to
        self._link: Link | None = None
        self._epoch = 0  # which link is current: frames and ends of older ones are ignored
        self._dead: str | None = None  # why the current link is gone, once it is
        self._closed = False
        self._reconnecting = threading.RLock()  # held through a reconnect and its model load
        self._session = uuid.uuid4().hex  # the server keeps this client's waiting calls under it
        self._queued: set[int] = set()  # generations the server has queued and not yet started
        self._started: set[int] = set()  # calls the server has sent a frame other than `queued` for
        self._parked: set[int] = set()  # those waiting through a reconnect
        #: Bytes of frames received (the link's cost: previews, images, replies)...
        self.bytes_received = 0
        #: ...and of those, the step previews' images.
        self.preview_bytes = 0
        #: Links opened after the first one dropped.
        self.reconnects = 0
        #: The link's speed (bytes/s) as timed when it opened; it picks how images cross.
        self.link_rate: float | None = None
        self._open()

    # -- the Engine protocol ----------------------------------------------------------------

    @property
    def tasks(self) -> tuple[TaskSettings, ...]:
        return self._tasks

    @property
    def active_task(self) -> str | None:
        return self._active

    @property
    def model(self) -> ModelInfo | None:
        return self._model

    def load(self, on_progress: Callable[[str], object] | None = None, source: str | None = None) -> ModelInfo:
        reply, _ = self._call({"type": "load", "source": source}, on_progress=on_progress)
        self._loaded = (source,)
        self._refresh()
        return decode_as(ModelInfo, reply["model"])

    def switch_task(self, name: str, on_progress: Callable[[str], object] | None = None) -> AdapterSwitch:
        reply, _ = self._call({"type": "switch_task", "name": name}, on_progress=on_progress)
        self._refresh()
        return decode_as(AdapterSwitch, reply["switch"])

    def prefetch(self, task: str) -> None:
        """A hint, as LocalEngine's is: a link that is down is for the switch to report."""
        try:
            self._call({"type": "prefetch", "task": task})
        except EngineError:
            pass

    def models(self) -> tuple[ModelChoice, ...]:
        reply, _ = self._call({"type": "models"})
        return typing.cast(tuple[ModelChoice, ...], decode(tuple[ModelChoice, ...], reply["models"]))

    def switch_model(self, source: str, on_progress: Callable[[str], object] | None = None) -> ModelSwitch:
        reply, _ = self._call({"type": "switch_model", "source": source}, on_progress=on_progress)
        self._refresh()
        switch = decode_as(ModelSwitch, reply["switch"])
        self._chosen = switch.model.source
        return switch

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> GenerationResult:
        blob = upload(request.init_image) if request.init_image else b""

        def step(frame: dict[str, Any], image: bytes) -> None:
            self.preview_bytes += len(image)
            if on_step is not None:
                on_step(StepPreview(frame["step"], frame["total"], image_from(image), frame["elapsed_s"]))

        message = {
            "type": "generate",
            "request": encode(request),
            "preview_side": self._preview_side,
            "preview_format": self._preview_format,
            "image_format": self.image_format,
        }
        reply, image = self._call(message, blob, on_step=step, cancel=cancel)
        result = decode_as(GenerationResult, reply["result"])
        if cancel is not None and cancel.is_set() and not result.cancelled:
            # Cancelled while the last steps were still crossing the link: stop means keep
            # nothing, as a ctrl+c after the last step's check does locally.
            result = dataclasses.replace(result, cancelled=True)
            image = b""
        self._refresh()
        params = result.params
        if request.init_image and params.init_image:  # the server ran a copy: record the user's file
            params = dataclasses.replace(params, init_image=str(Path(request.init_image).expanduser().resolve()))
        try:
            finished = image_from(image, reply.get("raw"))
        except (WireError, OSError) as exc:
            raise EngineError(f"the engine server sent an image that cannot be read: {exc}") from None
        return dataclasses.replace(result, params=params, image=finished)

    @property
    def image_format(self) -> str:
        """How the next finished image crosses the link: "png" or "raw"."""
        if self._image_format != "auto":
            return self._image_format
        return "raw" if (self.link_rate or 0) >= RAW_ABOVE else "png"

    def hardware(self) -> tuple[HardwareSnapshot | None, dict[str, Peak], dict[str, dict[str, Peak]]]:
        """The server's latest hardware snapshot and its peaks by task and by task's stage
        (answered at once, also while a generation runs)."""
        reply, _ = self._call({"type": "hardware"})
        snapshot = None if reply["snapshot"] is None else decode_as(HardwareSnapshot, reply["snapshot"])
        by_task = typing.cast(dict[str, Peak], decode(dict[str, Peak], reply["by_task"]))
        by_stage = typing.cast(dict[str, dict[str, Peak]], decode(dict[str, dict[str, Peak]], reply["by_stage"]))
        return snapshot, by_task, by_stage

    def queue(self) -> list[dict[str, Any]]:
        """The server's calls, the running one first and then the waiting ones of every client
        in the order they will run: job, client, type, task, running."""
        reply, _ = self._call({"type": "queue"})
        return list(reply["jobs"])

    @property
    def down(self) -> str | None:
        """Why the link is down, or None while it is up."""
        return None if self._closed else self._dead

    def watch_link(self, listener: Callable[[str | None], object]) -> Callable[[], None]:
        """Call `listener` with why, when the link drops (not when it is closed), and with None
        when a new link is up; on the thread that saw it. Returns the call that stops it."""
        return self._link_listeners.subscribe(listener)

    def watch_models(self, listener: Callable[[tuple[ModelInfo, str]], object]) -> Callable[[], None]:
        """Call `listener` with (the model, who chose it) when another client of the server
        switches the model this one shares; on the link's reader thread. Returns the call that
        stops it."""
        return self._model_listeners.subscribe(listener)

    def session(self, kind: str, blob: bytes = b"", **fields: Any) -> dict[str, Any]:
        """A request to the queue the user's engine keeps (remote/hosted.py: submit, cancel,
        move, retry, pause, resume, switch, jobs); its reply. EngineError saying why not."""
        reply, _ = self._call({"type": f"session.{kind}", **fields}, blob)
        return reply

    def watch_session(
        self,
        listener: Callable[[SessionNews], object],
        preview_side: int = 0,
        preview_format: str = PREVIEW_FORMAT,
        images: bool = False,
    ) -> Callable[[], None]:
        """Call `listener` with the engine queue's news (remote/hosted.py), on the link's reader
        thread: at once with the queue as it is, then each change, step and finished image, and
        the queue again after a reconnect. `preview_side`: steps' previews scaled to it (0: none);
        `images`: finished images too. Returns the call that stops it. EngineError when the
        engine keeps no queue."""
        stop = self._news_listeners.subscribe(listener)
        self._watching = {"preview_side": preview_side, "preview_format": preview_format, "images": images}
        try:
            self._tell_news(self._call({"type": "session.watch", **self._watching}))
        except EngineError:
            stop()
            raise
        return stop

    def _tell_news(self, reply: tuple[dict[str, Any], bytes]) -> None:
        for news in read_news({"what": "jobs", **reply[0]}, b""):
            self._news_listeners.tell(news)

    def restart(self) -> ModelInfo | None:
        """A new link now, when the last one dropped (the user's engine started again, with the
        model it had loaded); the model it holds. EngineError when that fails."""
        if self._closed:
            raise EngineError("the link to the engine is closed")
        with self._reconnecting:
            if self._dead is not None:
                self._reconnect()
        return self._model

    def close(self) -> None:
        """End the link (a server started for it stops) and make no new one."""
        with self._lock:
            self._closed = True
            link, self._link = self._link, None
        if link is not None:
            link.close()

    # -- the link ---------------------------------------------------------------------------

    def _open(self) -> None:
        """Open a link, say hello (versions checked) and read the server's state."""
        # Until the new link is in place the old one stays dead (`_dead` kept): a call made
        # meanwhile (a hardware poll) fails at once instead of writing to the old link.
        ended: list[str] = []
        with self._lock:
            self._epoch += 1
            epoch, self._link = self._epoch, None

        def on_frame(frame: dict[str, Any], payload: bytes) -> None:
            if epoch == self._epoch:
                self._on_frame(frame, payload)

        def on_end(why: str) -> None:
            ended.append(why)
            if epoch == self._epoch:
                self._on_end(why)

        try:
            link = self._opener(on_frame, on_end)  # its reader may end (and say why) before this returns
        except EngineError as exc:
            with self._lock:
                self._dead = str(exc)
            raise
        with self._lock:
            self._link = link
            if not ended:
                self._dead = None
        hello, _ = self._call(
            {
                "type": "hello",
                "version": __version__,
                "protocol": PROTOCOL,
                "client": self.name,
                "label": self.label,
                "session": self._session,
            }
        )
        self._settle_parked(set(hello.get("resumed") or ()))
        self.hosts_queue = bool(hello.get("queue"))
        if hello.get("protocol") != PROTOCOL or hello.get("version") != __version__:
            self.close()
            raise EngineError(
                f"the server is spatiora {hello.get('version')} (protocol {hello.get('protocol')}) and this is "
                f"spatiora {__version__} (protocol {PROTOCOL}): install the same version on both machines"
            )
        self.link_rate = self._time_link()
        self._refresh()
        if self._watching is not None and self.hosts_queue:
            self._tell_news(self._call({"type": "session.watch", **self._watching}))

    def _time_link(self) -> float:
        """The link's speed in bytes/s, at least: PROBE_BYTES echoed, round trip included (so a
        slow link is never taken for a fast one). A link that may be fast is timed twice and the
        faster taken: ssh's first bulk transfer on a new channel is slower than the rest."""
        rate = 0.0
        for _ in range(2):
            start = time.perf_counter()
            self._call({"type": "echo"}, bytes(PROBE_BYTES))
            rate = max(rate, 2 * PROBE_BYTES / max(time.perf_counter() - start, 1e-6))
            if rate < RAW_ABOVE / 4:
                break
        return rate

    def _settle_parked(self, resumed: set[int]) -> None:
        """After a reconnect: the waiting generations the server handed back go on; the others
        (a server that is a new process) fail, saying why."""
        with self._lock:
            lost, self._parked = self._parked - resumed, set()
        self._fail(lost, "the engine server that queued this request is gone; run it again")

    def _resume(self) -> None:
        """Reconnect at once for the generations the server may be keeping (see the docstring);
        if that fails, they fail with the reason."""
        try:
            self._reconnect()
        except EngineError as exc:
            with self._lock:
                parked, self._parked = self._parked, set()
            self._fail(parked, str(exc))

    def _fail(self, rids: set[int], why: str) -> None:
        """End the calls `rids` with a link error saying `why`."""
        message = {"type": "error", "kind": "link", "message": why}
        with self._lock:
            for rid in rids:
                waiting = self._waiting.pop(rid, None)
                if waiting is not None:
                    waiting.put((message, b""))

    def _reconnect(self) -> None:
        """A new link after the last one dropped, with the model loaded again if the new server
        has none (one started for this client), or, on the user's engine, the model the engine
        held when it went down. EngineError naming both faults if it fails."""
        with self._reconnecting:
            if self._dead is None:
                return  # another thread has reconnected
            before = self._dead
            try:
                self._open()
                if self._loaded is not None and self._model is None:
                    self.load(source=self._loaded[0])
                chosen, model = self._chosen, self._model
                if not self._resume_parked and chosen is not None and model is not None and model.source != chosen:
                    # A new engine (the user's, after a crash) starts on the config's model: the
                    # one this client had switched to is loaded again. (A server that outlives its
                    # links keeps whatever its clients chose meanwhile.)
                    self.switch_model(chosen)
            except EngineError as exc:
                again = str(exc)
                raise EngineError(again if again == before else f"{before}; reconnecting failed: {again}") from None
            self.reconnects += 1
        self._link_listeners.tell(None)

    def _refresh(self) -> None:
        reply, _ = self._call({"type": "state"})
        self._tasks = decode(tuple[TaskSettings, ...], reply["tasks"])
        self._active = reply["active"]
        self._model = None if reply["model"] is None else decode_as(ModelInfo, reply["model"])

    def _call(
        self,
        message: dict[str, Any],
        blob: bytes = b"",
        on_progress: Callable[[str], object] | None = None,
        on_step: Callable[[dict[str, Any], bytes], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        if self._closed:
            raise EngineError("the link to the engine is closed")
        if message["type"] in RECONNECTING:
            with self._reconnecting:  # a reconnect under way (another thread's) finishes first
                if self._dead is not None:
                    self._reconnect()
        rid = next(self._ids)
        replies: queue.Queue[tuple[dict[str, Any], bytes]] = queue.Queue()
        with self._lock:
            if self._dead is not None:
                raise EngineError(self._dead)
            self._waiting[rid] = replies
        watch = _Watch(self, replies)
        try:
            self._send({**message, "id": rid}, blob)
            cancelled = False
            while True:
                try:
                    frame, payload = replies.get(timeout=0.05)
                    watch.heard(frame)
                except queue.Empty:
                    frame, payload = {"type": "wait"}, b""
                    watch.check(cancelled)
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = True
                    self._send({"type": "cancel", "id": next(self._ids), "target": rid})
                kind = frame["type"]
                if kind == "progress" and on_progress is not None:
                    on_progress(frame["text"])
                elif kind == "step" and on_step is not None:
                    on_step(frame, payload)
                elif kind == "ok":
                    return frame, payload
                elif kind == "error":
                    error = EngineOOM if frame.get("kind") == "oom" else EngineError
                    said = frame.get("message") or "the engine server failed"
                    raise error(self._fault(said, message) if frame.get("kind") == "link" else said)
        except _LinkDown as exc:
            raise EngineError(self._fault(str(exc), message)) from None
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
                self._started.discard(rid)
            watch.done()

    def _ask(self, message: dict[str, Any]) -> tuple[int, _Replies]:
        """Send `message` without waiting: its id, and the queue its reply comes to."""
        rid = next(self._ids)
        answers: _Replies = queue.Queue()
        with self._lock:
            self._waiting[rid] = answers
        try:
            self._send({**message, "id": rid})
        except _LinkDown:
            self._forget(rid)
            raise
        return rid, answers

    def _forget(self, rid: int) -> None:
        with self._lock:
            self._waiting.pop(rid, None)

    def _unresponsive(self, why: str) -> None:
        """The server stopped answering: the link is taken as dropped (the next call reconnects)."""
        with self._lock:
            self._dead = self._dead or why
            link, self._link = self._link, None
        if link is not None:
            threading.Thread(target=link.close, name="spatiora-close", daemon=True).start()

    def _send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        with self._lock:
            link, epoch = self._link, self._epoch
        try:
            if link is None:
                raise OSError
            link.send(message, blob)
        except (OSError, ValueError, FrameError):
            # The reader says why the link ended (ssh's own words) once it sees the end.
            deadline = time.monotonic() + 5
            while self._dead is None and epoch == self._epoch and time.monotonic() < deadline:
                time.sleep(0.02)
            with self._lock:
                if epoch != self._epoch:  # a newer link is being opened: this one is history
                    raise _LinkDown(self._dead or "the link to the engine dropped") from None
                if self._dead is None:
                    self._dead = "the link to the engine dropped"
                why = self._dead
            raise _LinkDown(why) from None

    def _fault(self, why: str, message: dict[str, Any]) -> str:
        """Why a call failed with its link, and what the next call does about it."""
        return why if message["type"] == "hello" or self._closed else f"{why}; {self.after_drop}"

    def _on_frame(self, frame: dict[str, Any], payload: bytes) -> None:
        self.bytes_received += len(payload) + 8 + len(str(frame))  # about: the JSON as text
        if frame.get("type") == "event":
            self._on_event(frame, payload)
            return
        rid = frame.get("id")
        with self._lock:
            target = self._waiting.get(rid) if isinstance(rid, int) else None
            if target is not None and isinstance(rid, int):
                if frame["type"] == "queued" and frame.get("call") == "generate":
                    # The server's worker may send a call's first step before its transport
                    # thread sends `queued`: a call that has started is never taken as waiting.
                    if rid not in self._started:
                        self._queued.add(rid)
                else:
                    self._queued.discard(rid)  # started (a step, a progress line) or answered
                    self._started.add(rid)
        if target is not None:
            target.put((frame, payload))

    def _on_event(self, frame: dict[str, Any], payload: bytes = b"") -> None:
        """What another client changed for every client of the server, or the engine's queue's
        news (to a watching client)."""
        if frame.get("event") == "session":
            try:
                told = read_news(frame, payload)
            except (KeyError, TypeError, ValueError, WireError, OSError):
                return  # one frame unread; the next list of jobs brings the window up to date
            for news in told:
                self._news_listeners.tell(news)
            return
        if frame.get("event") != "model":
            return  # one a newer server knows: nothing this client needs
        try:
            model = decode_as(ModelInfo, frame["model"])
        except (KeyError, WireError):
            return
        with self._lock:
            self._model, self._active = model, frame.get("active")
            self._chosen = model.source  # what the shared engine held last, whoever chose it
        self._model_listeners.tell((model, str(frame.get("by") or "another client")))

    def _on_end(self, why: str) -> None:
        message = {"type": "error", "kind": "link", "message": why}
        with self._lock:
            self._dead = why
            closed = self._closed
        if not closed:  # told before the calls fail: a UI can hold its queue before they do
            self._link_listeners.tell(why)
        with self._lock:
            # Generations still waiting their turn wait on through a reconnect; the rest fail.
            parked = self._queued & set(self._waiting) if not self._closed and self._resume_parked else set()
            for rid, waiting in list(self._waiting.items()):
                if rid not in parked:
                    waiting.put((message, b""))
                    del self._waiting[rid]
            self._queued.clear()
            self._parked |= parked
        if parked:
            threading.Thread(target=self._resume, name="spatiora-resume", daemon=True).start()
