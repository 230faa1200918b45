"""Images through kitty's graphics protocol, sent at their own size for the terminal to scale.

A step preview is small (the latent's size, 64x64 for a 512x512 image) and the terminal scales
it to the cells it covers, so a frame is a PNG of a few KB instead of a sixel image at the
box's full pixel size. An image larger than the box is sent at the box's size. Each image is
transmitted once; repaints only place it again.

Two ways to show it, chosen by the terminal probe (ui/terminal.py):

- Unicode placeholders (kitty ≥ 0.28, Ghostty; also through tmux's passthrough): the image gets
  a virtual placement, and the widget's cells are U+10EEEE characters whose colour names the
  image and whose diacritics name the row and column. The cells are text, so Textual composes,
  clips and covers them like any other; tmux keeps them in its grid.
- Direct placement (kitty before 0.28, which draws placeholders as empty boxes): the image is
  placed at the widget's top-left cell with the cursor left where it was, and drawn above the
  text. A placement is not text, so it is taken away (its data kept) when the widget hides or
  another screen takes over, and placed again when it shows.

Every command carries q=2, so the terminal never answers (an answer would reach Textual as keys).
"""

from __future__ import annotations

import base64
import io
import itertools
import random
from typing import Any

from PIL import Image as PILImage
from rich.control import Control
from rich.segment import ControlType, Segment
from rich.style import Style
from textual.dom import NoScreen
from textual.geometry import Region
from textual.screen import Screen
from textual.strip import Strip

from spatiora_tui.ui.widgets.pixels import ImageSource, ScaledImage, cell_pixels, fit_cells, fit_pixels

PLACEHOLDER = "\U0010eeee"
#: Bytes of base64 per chunk, as the protocol asks (at most 4096).
CHUNK = 4096
_NULL = Style()
_ZERO_WIDTH = ((ControlType.CURSOR_FORWARD, 0),)

# The diacritics kitty reads as row and column numbers 0, 1, 2 ... (kitty's rowcolumn-diacritics.txt,
# the combining marks of Unicode class 230 in order); 297 of them, enough for any pane.
_DIACRITIC_RANGES = (
    (0x0305, 0x0305), (0x030D, 0x030E), (0x0310, 0x0310), (0x0312, 0x0312), (0x033D, 0x033F),
    (0x0346, 0x0346), (0x034A, 0x034C), (0x0350, 0x0352), (0x0357, 0x0357), (0x035B, 0x035B),
    (0x0363, 0x036F), (0x0483, 0x0487), (0x0592, 0x0595), (0x0597, 0x0599), (0x059C, 0x05A1),
    (0x05A8, 0x05A9), (0x05AB, 0x05AC), (0x05AF, 0x05AF), (0x05C4, 0x05C4), (0x0610, 0x0617),
    (0x0657, 0x065B), (0x065D, 0x065E), (0x06D6, 0x06DC), (0x06DF, 0x06E2), (0x06E4, 0x06E4),
    (0x06E7, 0x06E8), (0x06EB, 0x06EC), (0x0730, 0x0730), (0x0732, 0x0733), (0x0735, 0x0736),
    (0x073A, 0x073A), (0x073D, 0x073D), (0x073F, 0x0741), (0x0743, 0x0743), (0x0745, 0x0745),
    (0x0747, 0x0747), (0x0749, 0x074A), (0x07EB, 0x07F1), (0x07F3, 0x07F3), (0x0816, 0x0819),
    (0x081B, 0x0823), (0x0825, 0x0827), (0x0829, 0x082D), (0x0951, 0x0951), (0x0953, 0x0954),
    (0x0F82, 0x0F83), (0x0F86, 0x0F87), (0x135D, 0x135F), (0x17DD, 0x17DD), (0x193A, 0x193A),
    (0x1A17, 0x1A17), (0x1A75, 0x1A7C), (0x1B6B, 0x1B6B), (0x1B6D, 0x1B73), (0x1CD0, 0x1CD2),
    (0x1CDA, 0x1CDB), (0x1CE0, 0x1CE0), (0x1DC0, 0x1DC1),
    (0x1DC3, 0x1DC9), (0x1DCB, 0x1DCC), (0x1DD1, 0x1DE6), (0x1DFE, 0x1DFE), (0x20D0, 0x20D1),
    (0x20D4, 0x20D7), (0x20DB, 0x20DC), (0x20E1, 0x20E1), (0x20E7, 0x20E7), (0x20E9, 0x20E9),
    (0x20F0, 0x20F0), (0x2CEF, 0x2CF1), (0x2DE0, 0x2DFF), (0xA66F, 0xA66F), (0xA67C, 0xA67D),
    (0xA6F0, 0xA6F1), (0xA8E0, 0xA8F1), (0xAAB0, 0xAAB0), (0xAAB2, 0xAAB3), (0xAAB7, 0xAAB8),
    (0xAABE, 0xAABF), (0xAAC1, 0xAAC1), (0xFE20, 0xFE26), (0x10A0F, 0x10A0F), (0x10A38, 0x10A38),
    (0x1D185, 0x1D189), (0x1D1AA, 0x1D1AD), (0x1D242, 0x1D244),
)  # fmt: skip
DIACRITICS = tuple(chr(c) for lo, hi in _DIACRITIC_RANGES for c in range(lo, hi + 1))

_ids = itertools.count(random.randrange(1, 1 << 20))


def command(keys: dict[str, Any], payload: bytes = b"") -> str:
    """One graphics command: ESC _ G keys ; payload ESC \\."""
    text = ",".join(f"{k}={v}" for k, v in keys.items())
    return f"\x1b_G{text}{';' + payload.decode('ascii') if payload else ''}\x1b\\"


def transmit(image: PILImage.Image, image_id: int) -> str:
    """The commands that send `image` as a PNG (deflate with PNG's filters: a third of zlib'd raw
    RGB's bytes on a smooth picture, for less CPU; benchmarks/image_methods.py), in chunks."""
    buffer = io.BytesIO()
    image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB").save(buffer, "PNG", compress_level=1)
    data = base64.standard_b64encode(buffer.getvalue())
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    out = [command({"a": "t", "f": 100, "i": image_id, "q": 2, "m": int(len(chunks) > 1)}, chunks[0])]
    out += [command({"q": 2, "m": int(n < len(chunks) - 1)}, chunk) for n, chunk in enumerate(chunks[1:], 1)]
    return "".join(out)


def tmux_wrap(sequence: str) -> str:
    """`sequence` wrapped for tmux's passthrough (allow-passthrough on): every ESC doubled."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


class KittyImage(ScaledImage):
    """Shows a PIL image through kitty graphics, filling the widget's content area."""

    DEFAULT_CSS = """
    KittyImage { width: auto; height: auto; }
    """

    method = "kitty"
    placeholders = True
    #: Wrapped for tmux's passthrough (ui/images.py sets it from the probe).
    passthrough = False

    def __init__(self, image: ImageSource | None = None, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self._image_id = next(_ids)
        self._sent: PILImage.Image | None = None  # the image the terminal holds under our id
        self._sent_size = (0, 0)  # its pixels
        self._placed: tuple[Region, tuple[int, int], Region] | None = None  # where, in how many cells, which part

    def image_changed(self) -> None:
        if self._image is None:
            self._take_away()

    def on_mount(self) -> None:
        self.app.screen_change_signal.subscribe(self, self._screen_changed)

    def _screen_changed(self, screen: Screen[Any]) -> None:
        if screen is not self.screen:
            self._take_away()
        else:
            self.refresh()

    def on_hide(self) -> None:
        self._take_away()

    def on_unmount(self) -> None:
        self._take_away()
        if self._sent is not None:
            self._write(command({"a": "d", "d": "I", "i": self._image_id, "q": 2}))  # its data too
            self._sent = None

    def _take_away(self) -> None:
        """Remove the direct placement (kept as data); placeholders are text and go with it."""
        if self._placed is not None and not self.placeholders:
            self._write(command({"a": "d", "d": "i", "i": self._image_id, "q": 2}))
        self._placed = None

    def _write(self, sequence: str) -> None:
        driver = getattr(self.app, "_driver", None)
        if driver is not None and sequence:
            driver.write(tmux_wrap(sequence) if self.passthrough else sequence)

    def render_lines(self, crop: Region) -> list[Strip]:
        blank = Strip.blank(crop.width, self.rich_style)
        try:
            if self._image is None or not self.screen.is_active or min(self.content_size) <= 0:
                return [blank] * crop.height
            region = self.screen.find_widget(self).region
        except NoScreen:
            return [blank] * crop.height
        width, height = fit_cells(self._image.size, self.content_size, cell_pixels())
        shown = crop.intersection(Region(0, 0, width, height))  # the image keeps its shape
        if not shown.height:
            return [blank] * crop.height
        sequence = self._sequence(region, (width, height), shown)
        if self.placeholders:
            lines = [self._placeholder_row(y, crop, width, height) for y in range(crop.y, crop.bottom)]
        else:
            lines = [blank] * crop.height
        if sequence:
            if self.passthrough:
                sequence = tmux_wrap(sequence)
            if not self.placeholders:  # placed at the cursor, which the lines' writer has put here
                at = Control.move_to(region.x + shown.x, region.y + shown.y).segment.text
                sequence = at + sequence + at
            first = Segment(sequence, _NULL, _ZERO_WIDTH)
            lines[0] = Strip([first, *lines[0]], lines[0].cell_length)
        return lines

    def _sequence(self, region: Region, cells: tuple[int, int], crop: Region) -> str:
        """What the terminal must be sent before these lines: the image when it is new, its
        placement when it is new or has moved. A direct placement shows the part of the image
        under `crop` (the widget's visible part), over those cells."""
        image = self._image
        assert image is not None
        out = ""
        if self._sent is not image:
            sent = fit_pixels(image, cells, cell_pixels())
            out = transmit(sent, self._image_id)
            self._sent, self._sent_size, self._placed = image, sent.size, None
        where = (region, cells, crop)
        if self._placed != where:
            if self.placeholders:
                keys: dict[str, Any] = {"a": "p", "U": 1, "i": self._image_id, "c": cells[0], "r": cells[1]}
            else:
                w, h = self._sent_size
                source = {
                    "x": crop.x * w // cells[0],
                    "y": crop.y * h // cells[1],
                    "w": max(1, crop.width * w // cells[0]),
                    "h": max(1, crop.height * h // cells[1]),
                }
                keys = {"a": "p", "i": self._image_id, "p": 1, "C": 1, "c": crop.width, "r": crop.height, **source}
            out += command(keys | {"q": 2})
        self._placed = where
        return out

    def _placeholder_row(self, row: int, crop: Region, width: int, height: int) -> Strip:
        if row >= min(height, len(DIACRITICS)):
            return Strip.blank(crop.width, self.rich_style)
        image_id = self._image_id
        color = f"rgb({(image_id >> 16) & 255},{(image_id >> 8) & 255},{image_id & 255})"
        style = self.rich_style + Style.parse(color)
        mark = DIACRITICS[row]
        right = min(crop.right, width, len(DIACRITICS))
        text = "".join(PLACEHOLDER + mark + DIACRITICS[col] for col in range(crop.x, right))
        cells = max(0, right - crop.x)
        pad = [Segment(" " * (crop.width - cells), self.rich_style)] if crop.width > cells else []
        return Strip([Segment(text, style), *pad], crop.width)


class KittyDirectImage(KittyImage):
    """For kitty graphics without Unicode placeholders (kitty before 0.28): placed directly."""

    method = "kitty-direct"
    placeholders = False
