"""What a Session reports while it runs: frozen dataclasses, each naming its job by id.

The TUI wraps each in a Textual message (ui/messages.py); the CLI prints them; tests collect them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spatiora_tui.engine.api import AdapterSwitch, GenerationResult, ModelInfo, ModelSwitch, StepPreview
from spatiora_tui.jobs.job import Job


@dataclass(frozen=True)
class QueueChanged:
    """Jobs were added, moved, paused, resumed or cancelled: redraw the queue."""


@dataclass(frozen=True)
class JobStarted:
    """A job began: `steps` at `width` x `height` (0: not known); `compiles_first`: a compiled
    UNet meets this size for the first time and compiles for it before the first step."""

    job_id: int
    task: str
    steps: int
    width: int = 0
    height: int = 0
    compiles_first: bool = False


@dataclass(frozen=True)
class JobStepped:
    job_id: int
    preview: StepPreview
    rate: float  # steps per second so far


@dataclass(frozen=True)
class JobFinished:
    """A job ended with an image (saved at `path`, or kept in memory when `save_error`), or was
    cancelled (no image)."""

    job_id: int
    result: GenerationResult
    path: Path | None
    save_error: str | None = None
    #: For a cancelled job: who cancelled it, when another client of the user's engine did.
    cancelled_by: str = ""

    def cancelled_words(self) -> str:
        """How a cancelled job ended, e.g. "cancelled by spatiora on /dev/pts/7 after 43 steps"."""
        by = f" by {self.cancelled_by}" if self.cancelled_by else ""
        return f"cancelled{by} after {self.result.steps_done} steps"


@dataclass(frozen=True)
class JobFailed:
    job_id: int
    task: str
    error: str
    out_of_memory: bool


@dataclass(frozen=True)
class TaskSwitched:
    """The engine's active task changed: for a job (`job_id`), or as the user asked (0)."""

    switch: AdapterSwitch
    job_id: int = 0


@dataclass(frozen=True)
class TaskSwitchFailed:
    task: str
    error: str
    job_id: int = 0


@dataclass(frozen=True)
class GroupFinished:
    """Every job of a batch or sweep has ended; its sheet (contact sheet or labelled grid) is at
    `path`, or `error` says why there is none."""

    group: str
    path: Path | None
    error: str | None = None


@dataclass(frozen=True)
class ImageSaved:
    """A "save again" of an image whose first save failed: saved at `path`, or `error`."""

    result: GenerationResult
    path: Path | None
    error: str | None


@dataclass(frozen=True)
class ModelLoading:
    """The base model is loading, or replacing another: `text` says what happens now."""

    text: str


@dataclass(frozen=True)
class ModelReady:
    """A base model is loaded: the first (`switch` None), or one that replaced another (`switch`
    says how long it took, with its notes). `by`: the other client that chose it (empty: this
    front end did)."""

    model: ModelInfo
    switch: ModelSwitch | None = None
    by: str = ""


@dataclass(frozen=True)
class ModelFailed:
    """Loading a base model failed, saying `error`: the first (`replacing` False), or one meant
    to replace another; `model` is the one still loaded (None: none)."""

    error: str
    model: ModelInfo | None = None
    replacing: bool = False


SessionEvent = (
    ModelLoading
    | ModelReady
    | ModelFailed
    | QueueChanged
    | JobStarted
    | JobStepped
    | JobFinished
    | JobFailed
    | TaskSwitched
    | TaskSwitchFailed
    | GroupFinished
    | ImageSaved
)
Emit = Callable[[SessionEvent], object]
#: Called at every step of the running job (on the runner's thread), before JobStepped is made.
StepHook = Callable[[Job, StepPreview], object]
