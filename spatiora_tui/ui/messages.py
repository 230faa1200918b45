"""Typed, past-tense messages that workers post to the app. Workers never touch widgets.

High-rate messages (previews, hardware samples) implement can_replace, so when the UI falls
behind only the newest one is drawn.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from textual.message import Message

from spatiora_tui.engine.api import ModelInfo
from spatiora_tui.hw import HardwareSnapshot
from spatiora_tui.jobs import events
from spatiora_tui.jobs.store import Orphan


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
class EngineSaid(Message):
    """Words about the engine's process (one being started, with its log file)."""

    text: str


@dataclass
class QueueFound(Message):
    """Sessions that ended left jobs queued (each Orphan is locked until adopted or released)."""

    orphans: list[Orphan]

    @property
    def count(self) -> int:
        return sum(len(o.records) for o in self.orphans)


@dataclass
class SessionNews(Message):
    """One of the session's events (jobs/events.py: a job started, stepped, finished or failed, a
    task switch, a group's sheet, a queue change, an image saved again), as the one message that
    carries every one of them to the app."""

    event: events.SessionEvent
    #: For a job's start: set once it is on screen. A runner in this process waits for it (up
    #: to PAINT_WAIT_S) before denoising, so the repaint does not compete with torch for the CPU.
    painted: threading.Event = field(default_factory=threading.Event)

    def can_replace(self, message: Message) -> bool:
        """A step replaces the same job's step still waiting: only the newest is drawn."""
        mine, theirs = self.event, getattr(message, "event", None)
        return (
            isinstance(mine, events.JobStepped)
            and isinstance(theirs, events.JobStepped)
            and theirs.job_id == mine.job_id
        )


class HardwareSampled(Message):
    def __init__(self, snapshot: HardwareSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HardwareSampled)
