"""Typed, past-tense messages that workers post to the app. Workers never touch widgets.

High-rate messages (previews, hardware samples) implement can_replace, so when the UI falls
behind only the newest one is drawn.
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from spatiora_tui.engine.api import AdapterSwitch, GenerationResult, ModelInfo, ModelSwitch, StepPreview
from spatiora_tui.hw import HardwareSnapshot


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


class AdapterSwitched(Message):
    def __init__(self, switch: AdapterSwitch) -> None:
        super().__init__()
        self.switch = switch


class AdapterSwitchFailed(Message):
    def __init__(self, task: str, error: str) -> None:
        super().__init__()
        self.task = task
        self.error = error


class StepPreviewReady(Message):
    def __init__(self, preview: StepPreview, rate: float) -> None:
        super().__init__()
        self.preview = preview
        self.rate = rate  # steps per second so far

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepPreviewReady)


class GenerationFinished(Message):
    """A generation ended: with an image (saved, or not when `save_error`), or cancelled."""

    def __init__(self, result: GenerationResult, path: Path | None, save_error: str | None = None) -> None:
        super().__init__()
        self.result = result
        self.path = path
        self.save_error = save_error


class ImageSaved(Message):
    """A "save again" of an image whose first save failed ended: saved at `path`, or `error`."""

    def __init__(self, result: GenerationResult, path: Path | None, error: str | None) -> None:
        super().__init__()
        self.result = result
        self.path = path
        self.error = error


class GenerationFailed(Message):
    def __init__(self, task: str, error: str, out_of_memory: bool) -> None:
        super().__init__()
        self.task = task
        self.error = error
        self.out_of_memory = out_of_memory


class HardwareSampled(Message):
    def __init__(self, snapshot: HardwareSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HardwareSampled)
