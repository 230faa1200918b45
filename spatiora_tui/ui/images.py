"""Which widget draws images: chosen from the terminal's answers (ui/terminal.py), or pinned by
[ui] renderer / --renderer.

The terminal can only be asked before Textual takes it over, so `choose_drawing` runs before the
app does. textual-image would ask again when imported (and, inside tmux, its kitty query became
the pane title): it is imported here with its own probe turned off, and told the cell size the
probe found.

Sixel: our SixelImage (textual-image's widget with our encoder). kitty: our KittyImage, with
Unicode placeholders or, where the terminal has none (kitty before 0.28), placed directly.
iTerm2 inline images: our ItermImage. Half-cell blocks: our HalfcellImage. Text only:
textual-image's UnicodeImage.
"""

from __future__ import annotations

import contextlib
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from textual.widget import Widget

from spatiora_tui.config import RENDERERS
from spatiora_tui.ui.terminal import Choice, choose, parse, place_from_environment, probe, unicode_placeholders


def choose_drawing(renderer: str) -> Choice:
    """How images will be drawn, and why. Asks the terminal when `renderer` is auto or kitty
    (whose placement depends on the terminal's version)."""
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
    terminal = _is_terminal()
    if renderer in ("halfcell", "unicode", "sixel", "iterm", "kitty-direct") or not terminal:
        choice = Choice(renderer, "pinned by [ui] renderer or --renderer")
        if not terminal and renderer in ("auto", "kitty"):
            choice = Choice("unicode", "not a terminal: images are drawn as text")
        _ready_textual_image(None)
        return choice
    place = place_from_environment()
    answers = parse(_ask(place))
    _ready_textual_image(answers.cell)
    choice = choose(answers, place)
    if renderer == "kitty":
        outer = place.outer if place.tmux else answers.version
        placed = "kitty" if place.tmux or unicode_placeholders(outer) else "kitty-direct"
        choice = Choice(placed, "pinned by [ui] renderer or --renderer", tmux_passthrough=place.tmux)
    return choice


def widget_class(choice: Choice) -> type[Widget]:
    """The image widget class for `choice`."""
    from spatiora_tui.ui.widgets.halfcell import HalfcellImage
    from spatiora_tui.ui.widgets.iterm import ItermImage
    from spatiora_tui.ui.widgets.kitty import KittyDirectImage, KittyImage
    from spatiora_tui.ui.widgets.sixel import SixelImage

    if choice.method == "unicode":
        from textual_image.widget import UnicodeImage

        return UnicodeImage  # type: ignore[no-any-return]
    if choice.method == "kitty" and choice.tmux_passthrough:
        return type("KittyImage", (KittyImage,), {"passthrough": True})
    classes: dict[str, type[Widget]] = {
        "sixel": SixelImage,
        "kitty": KittyImage,
        "kitty-direct": KittyDirectImage,
        "iterm": ItermImage,
        "halfcell": HalfcellImage,
    }
    return classes[choice.method]


def image_widget_class(renderer: str) -> type[Widget]:
    """The image widget class for `renderer` (one of RENDERERS), the terminal asked if need be."""
    return widget_class(choose_drawing(renderer))


def renderer_name(image_class: type[Widget]) -> str:
    """How `image_class` draws: sixel, kitty, kitty-direct, iterm, halfcell or unicode."""
    method = getattr(image_class, "method", None)
    if isinstance(method, str):
        return method
    return {"UnicodeImage": "unicode"}.get(image_class.__name__, image_class.__name__)


def describe(choice: Choice) -> str:
    """One line for a person: the method, why, and what would give images."""
    text = f"{choice.method}: {choice.reason}"
    return text + (f"; {choice.hint}" if choice.hint else "")


def _is_terminal() -> bool:
    streams = (sys.__stdin__, sys.__stdout__)
    return all(stream is not None and stream.isatty() for stream in streams)


def _ask(place: Any) -> bytes:
    assert sys.__stdin__ is not None and sys.__stdout__ is not None
    fd_in = sys.__stdin__.fileno()
    sys.__stdout__.flush()
    saved = termios.tcgetattr(fd_in)
    try:
        tty.setcbreak(fd_in, termios.TCSANOW)
        return probe(fd_in, sys.__stdout__.fileno(), place)
    except OSError:
        return b""
    finally:
        termios.tcsetattr(fd_in, termios.TCSANOW, saved)


class _NotATerminal:
    """sys.__stdout__ while textual-image is imported: its import-time probe sees no terminal."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _without_terminal() -> Iterator[None]:
    saved = sys.__stdout__
    sys.__stdout__ = _NotATerminal(saved)  # type: ignore[assignment, misc]
    try:
        yield
    finally:
        sys.__stdout__ = saved  # type: ignore[misc]


def _ready_textual_image(cell: tuple[int, int] | None) -> None:
    """Import textual-image without its own probe, and give it the cell size (or let it read
    the size from the tty now, while it still can)."""
    if "textual_image.renderable" not in sys.modules:
        with _without_terminal():
            import textual_image.renderable  # noqa: F401
    from textual_image._terminal import CellSize, get_cell_size

    if cell is not None and not hasattr(get_cell_size, "_result"):
        get_cell_size._result = CellSize(*cell)
    elif _is_terminal():
        get_cell_size()
