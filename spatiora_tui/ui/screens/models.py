"""The model picker: the checkpoints in the user's folders, to load one as the base model.

The list comes from the engine (file headers only, in a worker: a big install takes a moment);
a file that cannot be loaded is listed, dimmed, with the reason, so a user sees why their file is
not offered. Enter loads the highlighted one in the background; escape closes.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from spatiora_tui.engine.api import Engine, EngineError, ModelChoice
from spatiora_tui.ui.text import markup_safe


class ModelPicker(ModalScreen[str | None]):
    """Lists the checkpoints; dismisses with the chosen one's path, or None."""

    BINDINGS = [Binding("escape", "dismiss_picker", "Close", id="models.close")]
    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker > Vertical { width: 90%; max-width: 110; height: 80%; border: round $primary; background: $surface; }
    ModelPicker #models-list { height: 1fr; border: none; }
    ModelPicker #models-note { height: auto; padding: 0 1; color: $text-muted; }
    """

    class ModelsListed(Message):
        """The engine listed the checkpoints (or failed to)."""

        def __init__(self, choices: tuple[ModelChoice, ...], error: str | None = None) -> None:
            super().__init__()
            self.choices = choices
            self.error = error

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        self._current: str | None = None  # the path of the model loaded now

    def compose(self) -> ComposeResult:
        with Vertical():
            yield OptionList(id="models-list")
            yield Static("reading the model folders…", id="models-note")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "Base model"
        self.query_one(OptionList).focus()
        self._list()

    @work(thread=True, exclusive=True, exit_on_error=False, group="models")
    def _list(self) -> None:
        try:
            self.post_message(self.ModelsListed(self._engine.models()))
        except EngineError as exc:
            self.post_message(self.ModelsListed((), str(exc)))

    def on_model_picker_models_listed(self, message: ModelsListed) -> None:
        options = self.query_one(OptionList)
        note = self.query_one("#models-note", Static)
        if message.error:
            note.update(f"[b]cannot list the models:[/] {markup_safe(message.error)}")
            return
        if not message.choices:
            note.update(
                "no checkpoints found: put .safetensors files in a [paths] models folder, or name an "
                "AUTOMATIC1111/ComfyUI install in [paths] installs (docs/models.md)"
            )
            return
        width = max(len(c.name) for c in message.choices)
        for choice in message.choices:
            mark = "●" if choice.current else " "
            size = f"{choice.size_mb / 1024:.1f} GB" if choice.size_mb >= 1024 else f"{choice.size_mb:.0f} MB"
            text = f"{mark} {markup_safe(choice.name.ljust(width))}  {size:>7}  {markup_safe(choice.kind)}"
            options.add_option(
                Option(text if choice.loadable else f"[dim]{text}[/]", id=choice.path, disabled=not choice.loadable)
            )
        # The cursor starts on the model loaded now, so that one key press moves to another.
        self._current = next((c.path for c in message.choices if c.current), None)
        options.highlighted = next(
            (i for i, c in enumerate(message.choices) if c.current),
            next((i for i, c in enumerate(message.choices) if c.loadable), None),
        )
        loadable = sum(c.loadable for c in message.choices)
        note.update(
            f"{loadable} of {len(message.choices)} loadable · Enter loads the highlighted one in the "
            "background (the current model is freed first) · escape closes"
        )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id == self._current:
            self.notify("that is the base model already", timeout=3)
            return
        self.dismiss(event.option.id)

    def action_dismiss_picker(self) -> None:
        self.dismiss(None)
