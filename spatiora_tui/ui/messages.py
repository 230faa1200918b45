"""Typed, past-tense messages that workers post to the app. Workers never touch widgets.

High-rate messages (previews, hardware samples) implement can_replace, so when the UI falls
behind only the newest one is drawn.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path

from textual.message import Message

from spatiora_tui.engine.api import AdapterSwitch, GenerationResult, ModelInfo, ModelSwitch, StepPreview
from spatiora_tui.hw import HardwareSnapshot
from spatiora_tui.jobs import events
from spatiora_tui.jobs.store import Orphan


class ModelLoadProgressed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ModelLoaded(Message):
    def __init__(self, model: ModelInfo) -> None:
        super().__init__()
        self.model = model


class ModelLoadFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ModelSwitched(Message):
    """The base model was replaced (from the model picker)."""

    def __init__(self, switch: ModelSwitch) -> None:
        super().__init__()
        self.switch = switch


class ModelSwitchFailed(Message):
    """Replacing the base model failed; `model` is what is loaded now (None: nothing)."""

    def __init__(self, error: str, model: ModelInfo | None) -> None:
        super().__init__()
        self.error = error
        self.model = model


@dataclass
class EngineLinkChanged(Message):
    """The link to the engine (another process) dropped, saying `why`, or is up again (None)."""

    why: str | None


@dataclass
class EngineRestarted(Message):
    """A restart the user asked for ended: the engine holds `model`, or `error` says why not."""

    model: ModelInfo | None
    error: str | None = None


@dataclass
class ModelChosenElsewhere(Message):
    """Another client of the shared engine (`by`) switched the model this window uses."""

    model: ModelInfo
    by: str


@dataclass
class EngineSaid(Message):
    """Words about the engine's process (one being started, with its log file)."""

    text: str


@dataclass
class AdapterSwitched(Message):
    """The engine's active task changed: for a job (`job_id`), as the user asked (0), or with a
    new base model (`switch.model_switch`)."""

    switch: AdapterSwitch
    job_id: int = 0


@dataclass
class AdapterSwitchFailed(Message):
    task: str
    error: str
    job_id: int = 0


# -- the session's events, one message each (spatiora_tui.jobs.events says what they mean) ------


@dataclass
class QueueChanged(Message):
    """Jobs were added, moved, paused, resumed, cancelled or ended."""


@dataclass
class JobStarted(Message):
    job_id: int
    task: str
    steps: int
    #: Set once the job's start is on screen; the runner waits for it (up to PAINT_WAIT_S)
    #: before denoising, so the repaint does not compete with torch for the CPU.
    painted: threading.Event = field(default_factory=threading.Event)


@dataclass
class JobStepped(Message):
    job_id: int
    preview: StepPreview
    rate: float  # steps per second so far

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobStepped) and message.job_id == self.job_id


@dataclass
class JobFinished(Message):
    """A job ended: with an image (saved, or not when `save_error`), or cancelled."""

    job_id: int
    result: GenerationResult
    path: Path | None
    save_error: str | None = None


@dataclass
class JobFailed(Message):
    job_id: int
    task: str
    error: str
    out_of_memory: bool


@dataclass
class GroupFinished(Message):
    """A batch or sweep ended; its sheet is at `path`, or `error` says why there is none."""

    group: str
    path: Path | None
    error: str | None = None


@dataclass
class ImageSaved(Message):
    """A "save again" of an image whose first save failed ended: saved at `path`, or `error`."""

    result: GenerationResult
    path: Path | None
    error: str | None


@dataclass
class QueueFound(Message):
    """Sessions that ended left jobs queued (each Orphan is locked until adopted or released)."""

    orphans: list[Orphan]

    @property
    def count(self) -> int:
        return sum(len(o.records) for o in self.orphans)


_MESSAGES: dict[type, type[Message]] = {
    events.QueueChanged: QueueChanged,
    events.JobStarted: JobStarted,
    events.JobStepped: JobStepped,
    events.JobFinished: JobFinished,
    events.JobFailed: JobFailed,
    events.TaskSwitched: AdapterSwitched,
    events.TaskSwitchFailed: AdapterSwitchFailed,
    events.GroupFinished: GroupFinished,
    events.ImageSaved: ImageSaved,
}


def message_for(event: events.SessionEvent) -> Message:
    """The Textual message that carries a session event to the app."""
    cls = _MESSAGES[type(event)]
    return cls(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})


class HardwareSampled(Message):
    def __init__(self, snapshot: HardwareSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HardwareSampled)
