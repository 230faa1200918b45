"""The image widgets that let the terminal scale (kitty, iTerm2): their base, and pixel sizes."""

from __future__ import annotations

from os import PathLike
from typing import Any

from PIL import Image as PILImage
from textual.widget import Widget

ImageSource = PILImage.Image | str | PathLike[str]


def open_image(image: ImageSource | None) -> PILImage.Image | None:
    """A PIL image from an image or a path (the history screen passes paths)."""
    if image is None or isinstance(image, PILImage.Image):
        return image
    with PILImage.open(image) as opened:
        return opened.convert("RGB")


def cell_pixels() -> tuple[int, int]:
    """A cell's size in pixels, as the start-up probe (or textual-image's ioctl) found it."""
    from textual_image._terminal import get_cell_size

    size = get_cell_size()
    return size.width, size.height


def fit_pixels(image: PILImage.Image, cells: tuple[int, int], cell_px: tuple[int, int]) -> PILImage.Image:
    """`image`, made smaller when it has more pixels than `cells` show; never made bigger (the
    terminal scales a small image up for free). The shape is the widget's, which the preview
    pane sized to the image's."""
    box = (max(1, cells[0] * cell_px[0]), max(1, cells[1] * cell_px[1]))
    if image.width <= box[0] and image.height <= box[1]:
        return image
    return image.resize(box, PILImage.Resampling.LANCZOS)


def fit_cells(size: tuple[int, int], cells: tuple[int, int], cell_px: tuple[int, int]) -> tuple[int, int]:
    """The most columns and rows within `cells` that show an image of `size` pixels at its own
    shape (cells are not square: usually about twice as tall as wide)."""
    columns, rows = cells
    aspect = (size[0] / max(1, size[1])) * (cell_px[1] / max(1, cell_px[0]))  # columns per row
    if columns / max(1, rows) > aspect:
        return max(1, min(columns, round(rows * aspect))), rows
    return columns, max(1, min(rows, round(columns / aspect)))


class ScaledImage(Widget):
    """An image widget whose terminal scales the image to its cells; `image` takes a PIL image
    or a path (the history screen's), or None."""

    def __init__(self, image: ImageSource | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._image = open_image(image)

    @property
    def image(self) -> PILImage.Image | None:
        return self._image

    @image.setter
    def image(self, value: ImageSource | None) -> None:
        self._image = open_image(value)
        self.image_changed()
        self.refresh()

    def image_changed(self) -> None:
        """Called when a new image (or None) is set, before the repaint."""
