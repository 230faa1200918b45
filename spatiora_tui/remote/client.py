"""RemoteEngine: the Engine protocol, answered by `spatiora serve --stdio` in another process,
here or on another machine through the user's own ssh (`ssh HOST spatiora serve --stdio`).

One reader thread takes the server's frames and hands each to the request of its id; calls block
like LocalEngine's do. A cancel event set during generate() sends a `cancel` frame: the server
stops within one step, as it would locally. An init image is sent with its request, so a path on
this machine works against a server on another.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import queue
import subprocess
import threading
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
from spatiora_tui.hw.telemetry import Peak
from spatiora_tui.remote.frames import FrameError, FrameWriter, read_frame
from spatiora_tui.remote.server import PROTOCOL
from spatiora_tui.remote.wire import decode, decode_as, encode, image_from

#: What a step preview is scaled to before it crosses the link (the pane shows a few hundred px).
PREVIEW_SIDE = 512


class RemoteEngine:
    """An Engine whose work runs in a `spatiora serve --stdio` process started with `argv`."""

    def __init__(self, argv: Sequence[str], preview_side: int = PREVIEW_SIDE) -> None:
        self._argv = list(argv)
        self._preview_side = preview_side
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue[tuple[dict[str, Any], bytes]]] = {}
        self._lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._tasks: tuple[TaskSettings, ...] = ()
        self._active: str | None = None
        self._model: ModelInfo | None = None
        self._dead: str | None = None  # why the link is gone, once it is
        #: Bytes of frames received (the link's cost: previews, images, replies).
        self.bytes_received = 0
        try:
            self._proc = subprocess.Popen(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        except OSError as exc:
            raise EngineError(f"cannot start the engine server ({' '.join(self._argv)}): {exc}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None and self._proc.stderr is not None
        self._out = FrameWriter(self._proc.stdin)  # type: ignore[arg-type]
        self._drainer = threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True)
        self._drainer.start()
        threading.Thread(target=self._read, args=(self._proc.stdout,), name="spatiora-remote", daemon=True).start()
        hello, _ = self._call({"type": "hello", "version": __version__, "protocol": PROTOCOL})
        if hello.get("protocol") != PROTOCOL or hello.get("version") != __version__:
            self.close()
            raise EngineError(
                f"the server is spatiora {hello.get('version')} (protocol {hello.get('protocol')}) and this is "
                f"spatiora {__version__} (protocol {PROTOCOL}): install the same version on both machines"
            )
        self._refresh()

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
        self._refresh()
        return decode_as(ModelInfo, reply["model"])

    def switch_task(self, name: str, on_progress: Callable[[str], object] | None = None) -> AdapterSwitch:
        reply, _ = self._call({"type": "switch_task", "name": name}, on_progress=on_progress)
        self._refresh()
        return decode_as(AdapterSwitch, reply["switch"])

    def prefetch(self, task: str) -> None:
        self._call({"type": "prefetch", "task": task})

    def models(self) -> tuple[ModelChoice, ...]:
        reply, _ = self._call({"type": "models"})
        return typing.cast(tuple[ModelChoice, ...], decode(tuple[ModelChoice, ...], reply["models"]))

    def switch_model(self, source: str, on_progress: Callable[[str], object] | None = None) -> ModelSwitch:
        reply, _ = self._call({"type": "switch_model", "source": source}, on_progress=on_progress)
        self._refresh()
        return decode_as(ModelSwitch, reply["switch"])

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> GenerationResult:
        blob = b""
        if request.init_image:
            try:
                blob = Path(request.init_image).expanduser().read_bytes()
            except OSError:
                pass  # the server says what is wrong with the path, in the engines' words

        def step(frame: dict[str, Any], image: bytes) -> None:
            if on_step is not None:
                on_step(StepPreview(frame["step"], frame["total"], image_from(image), frame["elapsed_s"]))

        message = {"type": "generate", "request": encode(request), "preview_side": self._preview_side}
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
        return dataclasses.replace(result, params=params, image=image_from(image))

    def hardware(self) -> tuple[HardwareSnapshot | None, dict[str, Peak], dict[str, dict[str, Peak]]]:
        """The server's latest hardware snapshot and its peaks by task and by task's stage
        (answered at once, also while a generation runs)."""
        reply, _ = self._call({"type": "hardware"})
        snapshot = None if reply["snapshot"] is None else decode_as(HardwareSnapshot, reply["snapshot"])
        by_task = typing.cast(dict[str, Peak], decode(dict[str, Peak], reply["by_task"]))
        by_stage = typing.cast(dict[str, dict[str, Peak]], decode(dict[str, dict[str, Peak]], reply["by_stage"]))
        return snapshot, by_task, by_stage

    def close(self) -> None:
        """Stop the server (it ends when its stdin closes)."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()

    # -- the link ---------------------------------------------------------------------------

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
        rid = next(self._ids)
        replies: queue.Queue[tuple[dict[str, Any], bytes]] = queue.Queue()
        with self._lock:
            if self._dead is not None:
                raise EngineError(self._dead)
            self._waiting[rid] = replies
        try:
            self._send({**message, "id": rid}, blob)
            cancelled = False
            while True:
                try:
                    frame, payload = replies.get(timeout=0.05)
                except queue.Empty:
                    frame, payload = {"type": "wait"}, b""
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
                    raise error(frame.get("message") or "the engine server failed")
        finally:
            with self._lock:
                self._waiting.pop(rid, None)

    def _send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        try:
            self._out.send(message, blob)
        except (OSError, ValueError):
            raise EngineError(self._gone()) from None

    def _read(self, stream: Any) -> None:
        error = None
        try:
            while True:
                frame, payload = read_frame(stream)
                self.bytes_received += len(payload) + 8 + len(str(frame))  # about: the JSON as text
                rid = frame.get("id")
                with self._lock:
                    target = self._waiting.get(rid) if isinstance(rid, int) else None
                if target is not None:
                    target.put((frame, payload))
                elif frame.get("type") == "error":
                    error = frame.get("message")
        except FrameError:
            pass
        # The server's last words (ssh's "connection refused", a config error) come on stderr,
        # which may still be on its way when stdout ends.
        self._drainer.join(timeout=5)
        message = {"type": "error", "kind": "link", "message": error or self._gone()}
        with self._lock:
            self._dead = message["message"]
            for waiting in self._waiting.values():
                waiting.put((message, b""))
            self._waiting.clear()

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _gone(self) -> str:
        said = next((line for line in reversed(self._stderr) if line.strip()), "")
        return "the engine server stopped" + (f": {said}" if said else "; it said nothing")
