"""The engine's side of the protocol: `spatiora serve --stdio` reads frames on stdin and answers
on stdout, for one client (over `ssh host spatiora serve --stdio`, SSH is the authentication and
the encryption; nothing listens on a port).

Requests carry an id; the reply to each is one frame of the same id (its result or an error),
after any `progress` and `step` frames of that id. Engine calls run one at a time on a worker
thread, in order, so that a `cancel` frame is read while a generation runs and stops it within
one step. A frame that cannot be read ends the connection; a request that cannot be decoded is
answered with an error and the server goes on.
"""

from __future__ import annotations

import dataclasses
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

from spatiora_tui import __version__
from spatiora_tui.engine.api import Engine, EngineError, EngineOOM, GenerationRequest, StepPreview
from spatiora_tui.hw.telemetry import Telemetry
from spatiora_tui.remote.frames import Closed, FrameError, FrameWriter, read_frame
from spatiora_tui.remote.wire import WireError, decode, encode, png

#: Bumped when a frame's meaning changes; both sides must agree.
PROTOCOL = 1


def serve(engine: Engine, reader: BinaryIO, writer: BinaryIO, telemetry: Telemetry | None = None) -> None:
    """Answer one client until it closes the stream (or sends what cannot be read). With
    `telemetry` (the engine's, sampling), `hardware` requests get its latest snapshot and peaks,
    answered at once, also while a generation runs."""
    out = FrameWriter(writer)
    work: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue()
    cancels: dict[int, threading.Event] = {}
    uploads = tempfile.TemporaryDirectory(prefix="spatiora-serve-")

    def answer(message: dict[str, Any], blob: bytes = b"") -> None:
        try:
            out.send(message, blob)
        except OSError:
            pass  # the client is gone; the reader sees the end of its stream and stops

    def worker() -> None:
        while (item := work.get()) is not None:
            message, blob = item
            rid = message.get("id")
            try:
                reply = _handle(engine, message, blob, out, cancels, Path(uploads.name))
                answer({"type": "ok", "id": rid, **reply[0]}, reply[1])
            except EngineOOM as exc:
                answer({"type": "error", "id": rid, "kind": "oom", "message": str(exc)})
            except (EngineError, WireError, KeyError, TypeError, ValueError) as exc:
                answer({"type": "error", "id": rid, "kind": "engine", "message": _say(exc)})
            except OSError:
                pass  # a step frame found the client gone; its cancel event is set, or will be
            except Exception as exc:  # keep serving: the client gets the fault, in one line
                answer({"type": "error", "id": rid, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"})
            finally:
                if isinstance(rid, int):
                    cancels.pop(rid, None)

    thread = threading.Thread(target=worker, name="spatiora-serve", daemon=True)
    thread.start()
    try:
        while True:
            try:
                message, blob = read_frame(reader)
            except Closed:
                break
            except FrameError as exc:
                out.send({"type": "error", "id": None, "kind": "frame", "message": str(exc)})
                break
            kind, rid = message["type"], message.get("id")
            if not isinstance(rid, int):
                out.send({"type": "error", "id": None, "kind": "frame", "message": "a request needs an integer id"})
                continue
            if kind == "hello":
                out.send({"type": "ok", "id": rid, "version": __version__, "protocol": PROTOCOL})
            elif kind == "hardware":
                out.send({"type": "ok", "id": rid, **_hardware(telemetry)})
            elif kind == "cancel":
                target = message.get("target")
                if isinstance(target, int) and target in cancels:
                    cancels[target].set()
            else:
                if kind == "generate":
                    cancels[rid] = threading.Event()
                work.put((message, blob))
    finally:
        for event in list(cancels.values()):
            event.set()  # the client is gone: stop what runs for it
        work.put(None)
        thread.join(timeout=60)
        uploads.cleanup()


def _hardware(telemetry: Telemetry | None) -> dict[str, Any]:
    if telemetry is None:
        return {"snapshot": None, "by_task": {}, "by_stage": {}}
    snapshot = telemetry.latest or telemetry.sample()
    by_task = telemetry.peaks_by_task()
    by_stage = {task: telemetry.peaks_by_stage(task) for task in by_task}
    return {"snapshot": encode(snapshot), "by_task": encode(by_task), "by_stage": encode(by_stage)}


def _say(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"bad request: {exc}"


def _handle(
    engine: Engine,
    message: dict[str, Any],
    blob: bytes,
    out: FrameWriter,
    cancels: dict[int, threading.Event],
    uploads: Path,
) -> tuple[dict[str, Any], bytes]:
    kind, rid = message["type"], message["id"]

    def progress(text: str) -> None:
        out.send({"type": "progress", "id": rid, "text": str(text)})

    if kind == "state":
        return {"tasks": encode(engine.tasks), "active": engine.active_task, "model": encode(engine.model)}, b""
    if kind == "load":
        return {"model": encode(engine.load(progress, message.get("source")))}, b""
    if kind == "switch_task":
        return {"switch": encode(engine.switch_task(str(message["name"]), progress))}, b""
    if kind == "prefetch":
        engine.prefetch(str(message["task"]))
        return {}, b""
    if kind == "models":
        return {"models": encode(engine.models())}, b""
    if kind == "switch_model":
        return {"switch": encode(engine.switch_model(str(message["source"]), progress))}, b""
    if kind == "generate":
        request = decode(GenerationRequest, message["request"])
        if request.init_image and blob:
            # The client's file, sent with the request: it runs from a copy here.
            copy = uploads / f"{rid}-{Path(request.init_image).name}"
            copy.write_bytes(blob)
            request = dataclasses.replace(request, init_image=str(copy))
        side = message.get("preview_side")

        def on_step(preview: StepPreview) -> None:
            image = preview.image
            if image is not None and isinstance(side, int) and side > 0:
                image = image.copy()
                image.thumbnail((side, side))
            frame = {
                "type": "step",
                "id": rid,
                "step": preview.step,
                "total": preview.total,
                "elapsed_s": preview.elapsed_s,
            }
            out.send(frame, png(image) if image is not None else b"")

        result = engine.generate(request, on_step=on_step, cancel=cancels.get(rid) or threading.Event())
        image = result.image
        return {"result": encode(dataclasses.replace(result, image=None))}, png(image) if image is not None else b""
    raise ValueError(f"unknown request type {kind!r}")
