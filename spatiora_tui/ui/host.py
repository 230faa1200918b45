"""What the views (job_view, model_view, task_view, link_view) use of the App: declared here so
that they depend on this contract, not on the App module (which imports them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer

from spatiora_tui.config import Settings
from spatiora_tui.engine.api import ModelInfo
from spatiora_tui.hw import HardwareFeed
from spatiora_tui.jobs.events import SessionEvent
from spatiora_tui.jobs.view import Queue
from spatiora_tui.remote.client import RemoteEngine
from spatiora_tui.ui.pacing import FrameClock, StepThrottle
from spatiora_tui.ui.widgets.preview_pane import PreviewPane
from spatiora_tui.ui.widgets.prompt_pane import PromptPane
from spatiora_tui.ui.widgets.task_pane import TaskPane


class Host(Protocol):
    settings: Settings
    session: Queue
    telemetry: HardwareFeed
    frames: FrameClock
    frame_timer: Timer
    preview_pane: PreviewPane
    prompt_pane: PromptPane
    task_pane: TaskPane
    sub_title: str

    @property
    def screen(self) -> Screen[object]: ...
    @property
    def linked(self) -> RemoteEngine | None: ...
    @property
    def model_ready(self) -> bool: ...
    @property
    def restarting(self) -> bool:
        """An engine restart runs now."""
        ...

    def say(self, text: str, error: bool = False) -> None: ...
    def key(self, action: str) -> str: ...
    def kick(self) -> None: ...
    def show_model(self, model: ModelInfo) -> None: ...
    def load_model(self, source: str | None = None, task: str | None = None) -> Any: ...
    def restart_engine(self, task: str | None) -> Any: ...
    def engine_queue_note(self) -> str: ...
    def post_event(self, event: SessionEvent, steps: StepThrottle, wait: bool = True) -> None: ...
    def post_message(self, message: Message) -> bool: ...
    def refresh_bindings(self) -> None: ...
    def call_after_refresh(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> bool: ...
    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None: ...
