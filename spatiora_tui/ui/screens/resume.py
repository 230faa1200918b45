"""Offered at start when a session that ended (a dropped SSH session, a crash, a quit with jobs
waiting) left jobs in the queue: resume them, keep them for later, or discard them."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from spatiora_tui.jobs.store import Orphan
from spatiora_tui.jobs.view import Queue
from spatiora_tui.ui.text import markup_safe

#: What the user chose: run them in this session, leave them in place, or delete them.
RESUME, LATER, DISCARD = "resume", "later", "discard"


def _when(orphans: list[Orphan]) -> str:
    try:
        newest = max(o.path.stat().st_mtime for o in orphans)
    except (OSError, ValueError):
        return ""
    return f", last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(newest))}"


class ResumeQueue(ModalScreen[str]):
    BINDINGS = [
        Binding("enter,y", "choose('resume')", "Resume them", id="resume.yes"),
        Binding("escape,l", "choose('later')", "Later (keep them)", id="resume.later"),
        Binding("D", "choose('discard')", "Discard them", id="resume.discard"),
    ]
    DEFAULT_CSS = """
    ResumeQueue { align: center middle; }
    ResumeQueue > Vertical { width: 80; height: auto; border: round $warning; background: $surface; padding: 1 2; }
    ResumeQueue Static { height: auto; }
    """

    def __init__(self, orphans: list[Orphan]) -> None:
        super().__init__()
        self._orphans = orphans

    def compose(self) -> ComposeResult:
        records = [r for o in self._orphans for r in o.records]
        problems = [p for o in self._orphans for p in o.problems]
        prompts = [str(r.get("request", {}).get("prompt", "?")) for r in records[:5]]
        lines = [f"[b]{len(records)} job(s) were left in the queue[/] by a session that ended{_when(self._orphans)}:"]
        lines += [f"  · {markup_safe(' '.join(p.split())[:70])}" for p in prompts]
        if len(records) > len(prompts):
            lines.append(f"  · … and {len(records) - len(prompts)} more")
        lines += [markup_safe(p) for p in problems]
        lines += ["", "[b]Enter[/] resume them · [b]Esc[/] later (kept for the next start) · [b]D[/] discard them"]
        with Vertical():
            yield Static("\n".join(lines), id="resume-text")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


def settle(queue: Queue, orphans: list[Orphan], choice: str | None) -> tuple[str, list[str]]:
    """Do what the user chose for the queues sessions that ended left behind: adopt them into
    `queue`, delete them (a file not fully read is kept: never deleted unseen), or leave them for
    the next start. The line that says what was done, and notes on what could not be read."""
    if choice == RESUME:
        count, problems = queue.adopt(orphans)
        return f"resumed {count} job(s) from the earlier session", problems
    if choice == DISCARD:
        kept = 0
        for orphan in orphans:
            if orphan.problems:
                orphan.release()
                kept += 1
            else:
                orphan.remove()
        return "discarded the earlier session's queue" + (f" ({kept} unreadable file(s) kept)" if kept else ""), []
    for orphan in orphans:
        orphan.release()
    return "the earlier session's queue is kept: it is offered again at the next start (or: spatiora queue)", []
