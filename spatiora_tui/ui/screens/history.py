"""History: this session's images and earlier ones from the output folder, newest first, to
browse with the keyboard, view large and read their metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from spatiora_tui.outputs import HistoryIndex, image_files, read_metadata
from spatiora_tui.ui.text import clip, markup_safe

MAX_LISTED = 1000


def list_images(folder: Path, limit: int = MAX_LISTED) -> list[Path]:
    """PNG files in `folder`, newest first (hidden temp files excluded). Reads the disk: call it
    off the UI thread."""
    dated: list[tuple[float, Path]] = []
    for path in image_files(folder):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:
            continue  # removed while we looked
    dated.sort(key=lambda item: item[0], reverse=True)
    return [path for _, path in dated[:limit]]


def short_path(path: Path) -> str:
    """`path` as a person would type it here: relative to the working folder when inside it,
    else with ~ for the home folder."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        pass
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def describe(path: Path) -> str:
    """The metadata of one image as markup-safe text."""
    try:
        meta = read_metadata(path)
    except Exception as exc:  # a damaged or foreign file: say so, do not crash the browser
        return f"[b]cannot read {markup_safe(path.name)}[/]: {markup_safe(str(exc))}"
    lines = [f"[b]{markup_safe(path.name)}[/]", f"[dim]{markup_safe(short_path(path))}[/]", ""]
    record = meta.spatiora
    if record:
        req = record.get("request", {})
        model = record.get("model", {})
        timings = record.get("timings_ms", {})
        memory = record.get("memory_mb", {})
        adapters = ", ".join(f"{a.get('name')} @ {a.get('weight')}" for a in record.get("adapters", [])) or "none"
        lines += [
            f"task      {req.get('task')}   seed {req.get('seed')}",
            f"prompt    {req.get('prompt')}",
            f"negative  {req.get('negative_prompt')}",
            f"settings  {req.get('steps')} steps · CFG {req.get('guidance')} · {req.get('scheduler')} · "
            f"{req.get('width')}x{req.get('height')}",
            f"adapters  {adapters}",
            f"model     {model.get('name')} · {model.get('family')} · {model.get('device')} {model.get('dtype')}",
        ]
        if timings.get("image_ms") is not None:
            first = timings.get("first_preview_ms")
            lines.append(
                f"timings   image {timings['image_ms'] / 1000:.2f} s"
                + (f" · first preview {first / 1000:.2f} s" if first is not None else "")
            )
        if memory:
            lines.append(f"memory    peak RSS {memory.get('peak_rss_mb', 0):.0f} MB")
        lines = [lines[0], lines[1], lines[2], *(markup_safe(line) for line in lines[3:])]
    if meta.parameters:
        lines += ["", "[dim]A1111 parameters[/]", markup_safe(meta.parameters, keep_newlines=True)]
    if not record and not meta.parameters:
        lines.append("no generation metadata in this file")
    return "\n".join(lines)


class Pick(NamedTuple):
    """An image picked in the history, and what for: "settings" (make it again) or "init"
    (start an image-to-image run from it)."""

    path: Path
    use: str


class HistoryScreen(Screen[Pick | None]):
    """Dismissed with the highlighted image when its settings are to be used again or it is to
    be the init image, else None."""

    BINDINGS = [
        Binding("escape", "close", "Back", id="history.close"),
        Binding("f,enter", "toggle_large", "View large", id="history.large"),
        Binding("u", "use_settings", "Use its settings", id="history.use"),
        Binding("i", "start_from", "Start from it", id="history.init"),
    ]
    DEFAULT_CSS = """
    HistoryScreen #history-list { width: 44; height: 1fr; }
    HistoryScreen #history-right { width: 1fr; }
    HistoryScreen #history-image { height: 1fr; width: auto; }
    HistoryScreen #history-meta { height: auto; max-height: 16; padding: 0 1; }
    HistoryScreen.large #history-list, HistoryScreen.large #history-meta { display: none; }
    HistoryScreen.large #history-image { height: 1fr; }
    """

    def __init__(self, folder: Path, session: set[Path], image_class: type[Widget]) -> None:
        super().__init__()
        self._folder = folder
        self._session = session
        self._image_class = image_class
        self._files: list[Path] = []
        self._index: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield OptionList(id="history-list")
            with Vertical(id="history-right"):
                yield self._image_class(id="history-image")
                with VerticalScroll(id="history-meta"):
                    yield Static("", id="history-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#history-text", Static).update(f"reading {markup_safe(str(self._folder))}…")
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="history")
    def _load(self) -> None:
        """Stat every image and read the index off the UI thread: a big folder on a slow disk."""
        try:
            files = list_images(self._folder)
            index = HistoryIndex(self._folder).entries()  # task, seed, prompt per image, unopened
        except OSError as exc:
            text = f"cannot read {markup_safe(str(self._folder))}: {markup_safe(str(exc))}"
            self.app.call_from_thread(self.query_one("#history-text", Static).update, text)
            return
        self.app.call_from_thread(self._show, files, index)

    def _show(self, files: list[Path], index: dict[str, dict[str, Any]]) -> None:
        self._files, self._index = files, index
        options = self.query_one(OptionList)
        if not self._files:
            self.query_one("#history-text", Static).update(
                f"no images yet in {markup_safe(str(self._folder))}: generate with ctrl+g"
            )
            return
        options.add_options([self._option(i, p) for i, p in enumerate(self._files)])
        options.highlighted = 0
        options.focus()

    def _option(self, index: int, path: Path) -> Option:
        mark = "•" if path in self._session else " "
        label = f"{mark} {markup_safe(path.stem)}"
        entry = self._index.get(path.name)
        if entry and entry.get("prompt"):
            label += f"\n  [dim]{markup_safe(clip(str(entry['prompt']), 38))}[/]"
        return Option(label, id=str(index))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        path = self._files[int(event.option.id or 0)]
        image = self.query_one("#history-image")
        try:
            image.image = path  # type: ignore[attr-defined]
        except Exception:
            image.image = None  # type: ignore[attr-defined]
        self.query_one("#history-text", Static).update(describe(path))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_toggle_large()

    def action_toggle_large(self) -> None:
        if self._files:
            self.toggle_class("large")

    def action_use_settings(self) -> None:
        """Back to the prompt pane with this image's settings (A1111's "send to txt2img")."""
        self._pick("settings")

    def action_start_from(self) -> None:
        """Back to the prompt pane with this image as the init image (A1111's "send to img2img")."""
        self._pick("init")

    def _pick(self, use: str) -> None:
        index = self.query_one(OptionList).highlighted
        if self._files and index is not None:
            self.dismiss(Pick(self._files[index], use))

    def action_close(self) -> None:
        if self.has_class("large"):
            self.remove_class("large")
        else:
            self.dismiss(None)
