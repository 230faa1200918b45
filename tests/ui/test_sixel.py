"""The sixel widget sends each image once: textual-image's own recomposed on every image and
painted the new child twice, and each paint is the whole sixel image (~1 MB per preview frame)."""

from __future__ import annotations

import pytest
from PIL import Image
from textual.app import App, ComposeResult
from textual_image.widget import sixel as tis

from spatiora_tui.ui.widgets.sixel import SixelImage


class OneImage(App[None]):
    def compose(self) -> ComposeResult:
        widget = SixelImage(id="img")
        widget.styles.width, widget.styles.height = 40, 20
        yield widget


@pytest.fixture
def paints(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, tuple[int, int, int]]]:
    """(drawer, the image's first pixel) for each paint that sends sixel data."""
    seen: list[tuple[int, tuple[int, int, int]]] = []
    real = tis._ImageSixelImpl.render_lines

    def counting(self, crop):
        lines = real(self, crop)
        if lines:
            seen.append((id(self), self.image.getpixel((0, 0))))
        return lines

    monkeypatch.setattr(tis._ImageSixelImpl, "render_lines", counting)
    return seen


async def test_each_new_image_is_painted_once_by_the_same_drawer(paints) -> None:
    app = OneImage()
    async with app.run_test(size=(80, 30)) as pilot:
        await pilot.pause()
        assert paints == [], "no image, no sixel"
        colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
        for colour in colours:
            app.query_one(SixelImage).image = Image.new("RGB", (64, 64), colour)
            await pilot.pause()
            await pilot.pause(0.1)
        assert [colour for _, colour in paints] == colours, "each image sent once, in order"
        assert len({drawer for drawer, _ in paints}) == 1


async def test_a_resized_image_is_painted_again(paints) -> None:
    app = OneImage()
    async with app.run_test(size=(80, 30)) as pilot:
        await pilot.pause()
        widget = app.query_one(SixelImage)
        widget.image = Image.new("RGB", (64, 64), (200, 0, 0))
        await pilot.pause(0.1)
        before = len(paints)
        widget.styles.width, widget.styles.height = 30, 15
        await pilot.pause(0.1)
        resized = len(paints)
        assert resized > before, "a new size needs the image again"
        widget.image = None
        await pilot.pause(0.1)
        assert len(paints) == resized, "no image: nothing sent"


async def test_after_the_image_the_cursor_is_where_its_last_line_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual writes the rest of a screen row after the image's last line from where the cursor
    is: textual-image left it one row lower, so the rest of that row was written on the next and
    the old row stayed (after the history screen, its text and scrollbar beside the image)."""
    import re

    from textual.drivers.headless_driver import HeadlessDriver
    from textual_image._terminal import CellSize, get_cell_size

    written: list[str] = []
    monkeypatch.setattr(HeadlessDriver, "write", lambda self, data: written.append(data))
    monkeypatch.setattr(HeadlessDriver, "is_headless", property(lambda self: False))
    monkeypatch.setattr(get_cell_size, "_result", CellSize(10, 20), raising=False)
    app = OneImage()
    async with app.run_test(size=(80, 30)) as pilot:
        widget = app.query_one(SixelImage)
        widget.image = Image.new("RGB", (64, 64), (200, 0, 0))
        await pilot.pause(0.1)
        region = widget.region
        after = re.findall(r"\x1bP[^\x1b]*\x1b\\\x1b\[(\d+);(\d+)H", "".join(written))
        assert after, "a sixel image was written"
        row, column = (int(n) for n in after[-1])
        assert (row, column) == (region.bottom, region.right + 1), "1-based: the last row, after its last cell"
