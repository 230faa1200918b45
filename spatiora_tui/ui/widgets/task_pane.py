"""Task modes: the list (arrows + Enter select), the active one marked, its adapters and the
time the last switch took."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from spatiora_tui.config import TaskSettings
from spatiora_tui.ui.text import markup_safe


class TaskPane(Vertical):
    """Lists the task modes and describes the active one."""

    DEFAULT_CSS = """
    TaskPane { height: auto; }
    TaskPane OptionList { height: auto; max-height: 10; border: none; }
    TaskPane #task-detail { height: auto; padding: 0 1; }
    """

    class TaskChosen(Message):
        """The user picked a task in the list."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class TaskHighlighted(Message):
        """The cursor moved onto a task in the list (its adapters can be read ahead)."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, tasks: tuple[TaskSettings, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tasks = tasks
        self._active: str | None = None
        self._pending: str | None = None
        self._switch_text = "not switched yet"
        self._weights: tuple[tuple[str, float], ...] | None = None  # in force after the last switch
        self._warning: str | None = None
        self._model: str | None = None  # the name of the base model loaded now
        self._load_ms: dict[str, float] = {}  # task -> how long loading its own base model took last

    def compose(self) -> ComposeResult:
        yield OptionList(*[Option(self._label(t), id=t.name) for t in self._tasks], id="task-list")
        yield Static(id="task-detail")

    def on_mount(self) -> None:
        self.border_title = "Tasks"
        self._refresh_detail()

    @property
    def active(self) -> str | None:
        return self._active

    def set_active(
        self,
        name: str,
        switch_text: str,
        weights: tuple[tuple[str, float], ...] | None = None,
        warning: str | None = None,
    ) -> None:
        """Mark `name` active; `weights` are the adapters in force (manifest defaults resolved),
        `warning` the leak watchdog's, shown until the next switch."""
        self._active, self._switch_text = name, switch_text
        self._weights, self._warning = weights, warning
        if self._pending == name:
            self._pending = None
        self._relabel()

    def set_model(self, name: str) -> None:
        """The base model loaded now (tasks that name another one are marked: switching reloads)."""
        if name != self._model:
            self._model = name
            self._relabel()

    def record_load(self, task: str, duration_ms: float) -> None:
        """How long loading `task`'s own base model took."""
        self._load_ms[task] = duration_ms
        self._refresh_detail()

    def reloads(self, task: TaskSettings) -> bool:
        """Whether switching to `task` loads another base model."""
        if task.model is None or self._model is None:
            return False
        return task.model not in (self._model,) and PurePath(task.model).stem != PurePath(self._model).stem

    def set_pending(self, name: str | None) -> None:
        if name == self._pending:
            return  # every generation's end clears it: relabelling for nothing cost a layout
        self._pending = name
        self._relabel()

    def _relabel(self) -> None:
        options = self.query_one(OptionList)
        for task in self._tasks:
            options.replace_option_prompt(task.name, self._label(task))
        self._refresh_detail()

    def _label(self, task: TaskSettings) -> str:
        mark = "●" if task.name == self._active else ("…" if task.name == self._pending else " ")
        reload = "  [dim]⟳ own model[/]" if self.reloads(task) else ""
        return f"{mark} [b]{markup_safe(task.name)}[/]{reload}"

    def _refresh_detail(self) -> None:
        task = next((t for t in self._tasks if t.name == self._active), None)
        if task is None:
            self.query_one("#task-detail", Static).update("[dim]loading…[/]")
            return
        if self._weights is not None:
            pairs = [(name, f"{weight:g}") for name, weight in self._weights]
        else:
            pairs = [(a.name, "default" if a.weight is None else f"{a.weight:g}") for a in task.adapters]
        adapters = ", ".join(f"{markup_safe(name)} @ {weight}" for name, weight in pairs) or "none (base model)"
        lines = [
            f"[i]{markup_safe(task.description)}[/]" if task.description else "",
            f"model     {markup_safe(task.model)}{self._load_note(task)}" if task.model else "",
            f"adapters  {adapters}",
            f"settings  {task.steps} steps · CFG {task.guidance:g} · {task.scheduler} · {task.width}x{task.height}",
            f"[dim]{markup_safe(self._switch_text)}[/]",
            f"[b $warning]⚠ {markup_safe(self._warning)}[/]" if self._warning else "",
        ]
        if self._pending:
            lines.append(f"[b]next: {markup_safe(self._pending)}[/] (once the queue is done)")
        others = [t for t in self._tasks if t.name != task.name and self.reloads(t)]
        if others:
            lines.append(
                "[dim]⟳ "
                + ", ".join(f"{markup_safe(t.name)}{self._load_note(t)}" for t in others)
                + ": switching loads its own base model[/]"
            )
        self.query_one("#task-detail", Static).update("\n".join(line for line in lines if line))

    def _load_note(self, task: TaskSettings) -> str:
        last = self._load_ms.get(task.name)
        return f" (last load {last / 1000:.1f} s)" if last is not None else ""

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.TaskHighlighted(event.option.id))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.TaskChosen(event.option.id))
