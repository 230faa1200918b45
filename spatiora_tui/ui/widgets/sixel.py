"""Sixel images drawn once per image.

textual-image's sixel widget recomposes on every new image: it removes its drawing child and
mounts a new one, and the new child is painted twice (when mounted, then after the layout the
image setter asks for). Each paint sends the whole sixel image again, about 1 MB for a 912x615
preview: in xterm over SSH, a 30-step image sent 4.8 MB where 2.4 MB draws the same frames.
This widget keeps its child and gives it the new image, so each image is encoded and sent once.
textual-image is pinned (pyproject.toml); tests/ui/test_sixel.py counts the paints.

Each image is encoded by ui/sixel_encoder.py (whole-array numpy) instead of textual-image's
encoder: the same quantized pixels, in 2.7-6x less CPU time (docs/terminals.md).
"""

from __future__ import annotations

from typing import Any

from rich.control import Control
from rich.segment import ControlType, Segment
from rich.style import Style
from textual.app import ComposeResult
from textual_image.widget import sixel as _sixel
from textual_image.widget._base import Image as _BaseImage

from spatiora_tui.ui.sixel_encoder import encode

_NULL = Style()


class _Drawer(_sixel._ImageSixelImpl):  # type: ignore[misc]
    """textual-image's drawing child, with our encoder, and the cursor left where Textual
    expects it."""

    def _get_sixel_segments(self, sixel_data: str) -> list[Segment]:
        # The sixel image rides on the widget's last line, drawn from the top-left cell. After
        # it the cursor must be where that line's cells end, as Textual goes on writing the rest
        # of the screen row from there: textual-image moves it one row lower (to the region's
        # bottom), so the rest of that row landed on the next one, and after the history screen
        # its old text and scrollbar stayed beside the image.
        visible = self.screen.find_widget(self).visible_region
        return [
            Segment(Control.move_to(visible.x, visible.y).segment.text, _NULL),
            Segment(sixel_data, _NULL, ((ControlType.CURSOR_FORWARD, 0),)),
            Segment(Control.move_to(visible.right, visible.bottom - 1).segment.text, _NULL),
        ]

    def _image_to_sixels(self, image: Any, sixel_options: Any = None, background: Any = None) -> str:
        colors = sixel_options.colors if sixel_options is not None else 256
        under = tuple(background[:3]) if background is not None else (0, 0, 0)
        return encode(image, colors, under).decode("ascii")


class SixelImage(_sixel.Image, Renderable=_sixel._NoopRenderable):  # type: ignore[misc, call-arg]
    method = "sixel"

    def compose(self) -> ComposeResult:
        yield _Drawer(self.image, self._sixel_options)

    @_sixel.Image.image.setter  # type: ignore[untyped-decorator]
    def image(self, value: Any) -> None:
        _BaseImage.image.fset(self, value)  # stores it, refreshes the layout
        drawer = next(iter(self.query(_sixel._ImageSixelImpl)), None)
        if drawer is None:  # not composed yet
            self.refresh(recompose=True)
            return
        drawer.image = self.image
        drawer.refresh()
