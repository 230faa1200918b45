"""A half-cell image widget cheap enough to redraw at preview rates.

Each terminal cell shows two pixels: the upper as the foreground of "▀", the lower as its
background. textual-image's half-cell renderer builds a new Rich Style (two Colors, each parsed
from a hex string) for every cell of every frame and goes through Rich's renderable pipeline;
at 64x32 cells that is about 34 ms a frame, taken from the same CPU that denoises. This widget
keeps one Segment per (upper, lower) colour pair across frames, so a repeated pair costs a dict
lookup and its escape sequence is rendered once, and it hands Textual finished Strips through the
line API. Colours are rounded to `levels` per channel (64 by default: a step of 4 in 0-255, below
what a terminal preview shows) so that pairs repeat between frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as PILImage
from rich.color import Color, ColorType
from rich.color_triplet import ColorTriplet
from rich.segment import Segment
from rich.style import Style
from textual.filter import ANSIToTruecolor, LineFilter
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from spatiora_tui.ui.widgets.pixels import ImageSource, cell_pixels, open_image

UPPER_HALF = "▀"
#: Segment cache bound; beyond it the cache starts again. Pairs repeat between nearby frames, so
#: a few frames' worth is enough (64x32 cells is 2048 pairs at most); every cached pair is five
#: objects that each full garbage collection walks.
MAX_CACHED_PAIRS = 1 << 14


class HalfcellImage(Widget):
    """Shows a PIL image as half-cell blocks filling the widget's content area."""

    DEFAULT_CSS = """
    HalfcellImage { width: auto; height: auto; }
    """
    method = "halfcell"

    def __init__(self, image: ImageSource | None = None, *, levels: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if levels not in (2, 4, 8, 16, 32, 64, 128, 256):
            raise ValueError(f"levels must be a power of two from 2 to 256, got {levels}")
        self._shift = 8 - (levels - 1).bit_length()
        self._image: PILImage.Image | None = open_image(image)
        self._strips: list[Strip] | None = None
        self._strips_size: tuple[int, int] = (0, 0)
        self._segments: dict[int, Segment] = {}
        self._colors: dict[int, Color] = {}

    @property
    def image(self) -> PILImage.Image | None:
        return self._image

    @image.setter
    def image(self, image: ImageSource | None) -> None:
        old = self._image.size if self._image is not None else None
        self._image = open_image(image)
        self._strips = None
        # Only an auto-sized widget changes size with its image; otherwise repainting is enough.
        reshaped = (self._image.size if self._image is not None else None) != old
        width, height = self.styles.width, self.styles.height
        auto = width is None or height is None or width.is_auto or height.is_auto
        self.refresh(layout=reshaped and auto)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        """Auto width: the widest that keeps the aspect ratio at the widget's height.

        With a fixed or fractional height that is the height this widget was given last layout;
        before the first layout, the container's."""
        if self._image is None or self._image.height == 0:
            return 0
        styled = self.styles.height
        height = self.content_size.height if styled is not None and not styled.is_auto else 0
        height = height or container.height
        if not height:
            return container.width
        aspect = self._image.width / self._image.height
        return max(1, min(container.width, round(height * aspect / cell_aspect())))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """Auto height: what keeps the aspect ratio at `width` cells."""
        if self._image is None or self._image.width == 0:
            return 0
        return max(1, round(width * cell_aspect() * self._image.height / self._image.width))

    def get_line_filters(self) -> list[LineFilter]:
        """The app's filters less ANSI-to-truecolor: every colour here is already truecolor, and
        that filter's style cache (1024 entries) misses on nearly every cell of a new preview, which
        made it cost about half as much as building the image."""
        return [f for f in super().get_line_filters() if not isinstance(f, ANSIToTruecolor)]

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        if self._image is None or width <= 0 or height <= 0:
            return Strip.blank(max(width, 0), self.rich_style)
        if self._strips is None or self._strips_size != (width, height):
            self._strips = self._build(width, height)
            self._strips_size = (width, height)
        return self._strips[y] if 0 <= y < len(self._strips) else Strip.blank(width, self.rich_style)

    def _build(self, width: int, height: int) -> list[Strip]:
        assert self._image is not None
        image = self._image if self._image.mode == "RGB" else self._image.convert("RGB")
        size = (width, height * 2)
        shrinking = size[0] < image.width or size[1] < image.height
        resample = PILImage.Resampling.BOX if shrinking else PILImage.Resampling.BILINEAR
        pixels = np.asarray(image.resize(size, resample), dtype=np.uint32)
        if self._shift:
            # Round to the nearest level, then back to 0-255 so the darkest and brightest survive.
            step = 1 << self._shift
            pixels = np.minimum((pixels + step // 2) >> self._shift << self._shift, 255)
        eight_bit = self.app.console.color_system == "256"
        if eight_bit:  # 256 colours: matched here for the whole image, as Rich would cell by cell
            packed = EIGHT_BIT_FLAG | xterm_256(pixels)
        else:
            packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
        pairs = (packed[0::2].astype(np.uint64) << np.uint64(25)) | packed[1::2]
        if len(self._segments) > MAX_CACHED_PAIRS:
            self._segments.clear()
        segments, new_segment = self._segments, self._new_segment
        # Runs of one colour pair become one segment: less for Textual to crop, filter and write.
        starts = np.ones(pairs.shape, dtype=bool)
        starts[:, 1:] = pairs[:, 1:] != pairs[:, :-1]
        strips = []
        for row, row_starts in zip(pairs, starts):
            cols = np.flatnonzero(row_starts)
            runs = np.diff(cols, append=width).tolist()
            line = []
            for pair, run in zip(row[cols].tolist(), runs):
                segment = segments.get(pair)
                if segment is None:  # not `or`: Segment's __bool__ is a Python call per cell
                    segment = new_segment(pair)
                line.append(segment if run == 1 else Segment(UPPER_HALF * run, segment.style))
            strips.append(Strip(line, width))
        return strips

    def _new_segment(self, pair: int) -> Segment:
        segment = Segment(UPPER_HALF, Style.from_color(self._color(pair >> 25), self._color(pair & 0x1FFFFFF)))
        self._segments[pair] = segment
        return segment

    def _color(self, rgb: int) -> Color:
        color = self._colors.get(rgb)
        if color is None:
            color = Color.from_ansi(rgb & 0xFF) if rgb & EIGHT_BIT_FLAG else truecolor(rgb)
            if len(self._colors) > MAX_CACHED_PAIRS:
                self._colors.clear()
            self._colors[rgb] = color
        return color


_tuple_new = tuple.__new__

#: Marks a colour as an index of the 256-colour palette, not 0xRRGGBB (one bit above them).
EIGHT_BIT_FLAG = 1 << 24


def xterm_256(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The 256-colour palette index of each RGB pixel, as Rich's Color.downgrade picks it for a
    256-colour terminal (a grey below 15% saturation on the grey ramp, else the 6x6x6 cube), for
    the whole array at once: Rich does it per colour in Python, which cost more than drawing."""
    rgb = pixels.astype(np.float64)
    high, low = rgb.max(axis=-1) / 255, rgb.min(axis=-1) / 255
    lightness = (high + low) / 2
    spread = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(lightness <= 0.5, spread / (high + low), spread / (2.0 - high - low))
    saturation = np.where(spread == 0, 0.0, saturation)
    gray = np.round(lightness * 25.0)
    gray_index = np.where(gray == 0, 16, np.where(gray == 25, 231, 231 + gray))
    six = np.where(rgb < 95, rgb / 95, 1 + (rgb - 95) / 40)
    six = np.round(six)
    cube_index = 16 + 36 * six[..., 0] + 6 * six[..., 1] + six[..., 2]
    return np.where(saturation < 0.15, gray_index, cube_index).astype(np.uint32)


def truecolor(rgb: int) -> Color:
    """Rich's Color for 0xRRGGBB, equal to `Color(f"#{rgb:06x}", ColorType.TRUECOLOR, None,
    ColorTriplet(r, g, b))`. Color and ColorTriplet are NamedTuples, and their generated
    __new__ is a Python call with argument handling: building the tuples directly makes this
    about 30% cheaper, which counts when a noisy preview brings a few thousand new colours."""
    triplet = _tuple_new(ColorTriplet, (rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF))
    return _tuple_new(Color, (f"#{rgb:06x}", ColorType.TRUECOLOR, None, triplet))


def cell_aspect() -> float:
    """Width / height of a terminal cell in pixels (usually about 0.5)."""
    width, height = cell_pixels()
    return width / height if height else 0.5
