"""Images through the iTerm2 inline-image protocol (iTerm2, WezTerm), sent at their own size.

The terminal scales the image to the widget's cells (width=N, height=M in cells), so a step
preview at the latent's size is a PNG of a few KB. Like sixel, the image is drawn at the cursor
into the cell grid, where text written later covers it: it is written with the widget's last
line (the lines above are left alone), from the widget's top-left cell, on every paint. The PNG
is made once per image and size.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image as PILImage
from rich.control import Control
from rich.segment import ControlType, Segment
from rich.style import Style
from textual.dom import NoScreen
from textual.geometry import Region
from textual.strip import Strip

from spatiora_tui.ui.widgets.pixels import ImageSource, ScaledImage, cell_pixels, fit_pixels

_NULL = Style()
_ZERO_WIDTH = ((ControlType.CURSOR_FORWARD, 0),)


def inline_image(image: PILImage.Image, cells: tuple[int, int]) -> str:
    """The OSC 1337 File sequence drawing `image` over `cells` (columns, rows)."""
    buffer = io.BytesIO()
    image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB").save(buffer, "PNG", compress_level=1)
    data = buffer.getvalue()
    keys = f"inline=1;size={len(data)};width={cells[0]};height={cells[1]};preserveAspectRatio=1"
    return f"\x1b]1337;File={keys}:{base64.standard_b64encode(data).decode('ascii')}\x07"


class ItermImage(ScaledImage):
    """Shows a PIL image as an iTerm2 inline image filling the widget's content area."""

    method = "iterm"

    DEFAULT_CSS = """
    ItermImage { width: auto; height: auto; }
    """

    def __init__(self, image: ImageSource | None = None, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self._encoded: tuple[PILImage.Image, tuple[int, int], str] | None = None

    def render_lines(self, crop: Region) -> list[Strip]:
        cells = (self.content_size.width, self.content_size.height)
        try:
            if self._image is None or not self.screen.is_active or min(cells) <= 0:
                return [Strip.blank(crop.width, self.rich_style)] * crop.height
            region = self.screen.find_widget(self).region
        except NoScreen:
            return [Strip.blank(crop.width, self.rich_style)] * crop.height
        if self._encoded is None or self._encoded[:2] != (self._image, cells):
            fitted = fit_pixels(self._image, cells, cell_pixels())
            self._encoded = (self._image, cells, inline_image(fitted, cells))
        sequence = self._encoded[2]
        text = Control.move_to(region.x, region.y).segment.text + sequence
        text += Control.move_to(region.x + crop.right, region.y + crop.bottom - 1).segment.text  # the line's end
        return [Strip([])] * (crop.height - 1) + [Strip([Segment(text, _NULL, _ZERO_WIDTH)], crop.width)]
