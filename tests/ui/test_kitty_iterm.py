"""The kitty and iTerm2 image widgets: what they send the terminal, read back from the bytes
Textual writes (the headless driver's writes, recorded).

kitty before 0.28 draws Unicode placeholders as empty boxes (issue 35's kitty 0.26 finding):
KittyDirectImage places the image directly and takes the placement away when another screen
covers it. Each image is sent once, at its own size (a latent-size preview is a few KB), and
the terminal scales it to the cells; a repaint only places it again.
"""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image
from textual.app import App, ComposeResult
from textual.drivers.headless_driver import HeadlessDriver
from textual.screen import Screen
from textual.widgets import Static
from textual_image._terminal import CellSize, get_cell_size

from spatiora_tui.ui.widgets.iterm import ItermImage
from spatiora_tui.ui.widgets.kitty import DIACRITICS, PLACEHOLDER, KittyDirectImage, KittyImage, tmux_wrap, transmit
from spatiora_tui.ui.widgets.pixels import fit_cells

APC = re.compile(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\")


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the app writes to its terminal: the headless driver made to take the screen's
    updates as a terminal's driver does, and keep them."""
    out: list[str] = []
    monkeypatch.setattr(HeadlessDriver, "write", lambda self, data: out.append(data))
    monkeypatch.setattr(HeadlessDriver, "is_headless", property(lambda self: False))
    monkeypatch.setattr(get_cell_size, "_result", CellSize(10, 20), raising=False)
    return out


def commands(text: str) -> list[tuple[dict[str, str], str]]:
    found = []
    for keys, payload in APC.findall(text):
        found.append((dict(kv.split("=", 1) for kv in keys.split(",") if kv), payload))
    return found


def received(text: str) -> Image.Image:
    """The image a terminal would assemble from the transmissions in `text` (the last one)."""
    images: list[str] = []
    for keys, payload in commands(text):
        if keys.get("a") == "t":
            images.append(payload)
        elif images and "a" not in keys:
            images[-1] += payload
    return Image.open(io.BytesIO(base64.standard_b64decode(images[-1])))


class Other(Screen[None]):
    def compose(self) -> ComposeResult:
        yield Static("another screen")


class OneImage(App[None]):
    def __init__(self, widget_class: type, cells: tuple[int, int] = (40, 20)) -> None:
        super().__init__()
        self._class, self._cells = widget_class, cells

    def compose(self) -> ComposeResult:
        widget = self._class(id="img")
        widget.styles.width, widget.styles.height = self._cells
        yield widget


def test_transmit_chunks_a_png_and_keeps_quiet() -> None:
    image = Image.effect_noise((120, 90), 60).convert("RGB")
    text = transmit(image, 7)
    found = commands(text)
    assert len(found) > 1 and all(len(payload) <= 4096 for _, payload in found)
    assert all(keys.get("q") == "2" for keys, _ in found), "no command asks for an answer"
    assert (found[0][0]["a"], found[0][0]["f"], found[0][0]["i"]) == ("t", "100", "7")
    assert [keys["m"] for keys, _ in found] == ["1"] * (len(found) - 1) + ["0"]
    assert received(text).convert("RGB").tobytes() == image.tobytes()


def test_tmux_wrap_doubles_every_escape() -> None:
    assert tmux_wrap("\x1b_Ga=d\x1b\\") == "\x1bPtmux;\x1b\x1b_Ga=d\x1b\x1b\\\x1b\\"


def test_fit_cells_keeps_the_shape_in_cells_twice_as_tall_as_wide() -> None:
    assert fit_cells((512, 512), (40, 40), (10, 20)) == (40, 20)
    assert fit_cells((512, 512), (40, 10), (10, 20)) == (20, 10)
    assert fit_cells((1024, 512), (40, 40), (10, 20)) == (40, 10)


async def test_direct_placement_sends_the_image_once_at_its_own_size(written: list[str]) -> None:
    app = OneImage(KittyDirectImage)
    async with app.run_test(size=(80, 30)) as pilot:
        widget = app.query_one(KittyDirectImage)
        preview = Image.effect_noise((64, 64), 60).convert("RGB")
        written.clear()
        widget.image = preview
        await pilot.pause(0.1)
        sent = "".join(written)
        assert received(sent).size == (64, 64), "the terminal scales it: sent at its own size"
        [place] = [keys for keys, _ in commands(sent) if keys.get("a") == "p"]
        assert (place["c"], place["r"], place["C"]) == ("40", "20", "1"), "over the cells, the cursor left alone"
        assert len(sent) < 20_000, f"a 64x64 preview is a few KB, not {len(sent)} bytes"

        written.clear()
        widget.refresh()
        await pilot.pause(0.1)
        assert not commands("".join(written)), "a repaint in the same place sends nothing"

        widget.styles.width, widget.styles.height = 20, 10
        await pilot.pause(0.1)
        moved = commands("".join(written))
        assert [k["a"] for k, _ in moved] == ["p"] and (moved[0][0]["c"], moved[0][0]["r"]) == ("20", "10")


async def test_direct_placement_goes_when_another_screen_covers_it_and_comes_back(written: list[str]) -> None:
    app = OneImage(KittyDirectImage)
    async with app.run_test(size=(80, 30)) as pilot:
        widget = app.query_one(KittyDirectImage)
        widget.image = Image.new("RGB", (64, 64), (200, 30, 30))
        await pilot.pause(0.1)
        written.clear()
        app.push_screen(Other())
        await pilot.pause(0.1)
        gone = [keys for keys, _ in commands("".join(written))]
        assert {"a": "d", "d": "i", "i": str(widget._image_id), "q": "2"} in gone, "the placement is taken away"
        assert not any(keys.get("f") for keys in gone), "its data stays in the terminal"
        written.clear()
        app.pop_screen()
        await pilot.pause(0.1)
        back = [keys for keys, _ in commands("".join(written))]
        assert [k["a"] for k in back] == ["p"], "placed again, not sent again"


async def test_a_wide_image_keeps_its_shape(written: list[str]) -> None:
    app = OneImage(KittyDirectImage)
    async with app.run_test(size=(80, 30)) as pilot:
        app.query_one(KittyDirectImage).image = Image.new("RGB", (256, 64), (0, 90, 200))
        await pilot.pause(0.1)
        [place] = [keys for keys, _ in commands("".join(written)) if keys.get("a") == "p"]
        assert (place["c"], place["r"]) == ("40", "5")


async def test_placeholders_are_cells_naming_the_image_row_and_column(written: list[str]) -> None:
    app = OneImage(KittyImage, cells=(12, 6))
    async with app.run_test(size=(40, 12)) as pilot:
        widget = app.query_one(KittyImage)
        widget.image = Image.new("RGB", (96, 96), (10, 200, 10))
        await pilot.pause(0.1)
        sent = "".join(written)
        [place] = [keys for keys, _ in commands(sent) if keys.get("a") == "p"]
        assert place["U"] == "1" and (place["c"], place["r"]) == ("12", "6")
        lines = widget.render_lines(widget.region.reset_offset)
        first_row = "".join(segment.text for segment in lines[0])
        assert first_row.count(PLACEHOLDER) == 12
        assert first_row.startswith(PLACEHOLDER + DIACRITICS[0] + DIACRITICS[0])
        [cells] = [segment for segment in lines[0] if PLACEHOLDER in segment.text]
        colour = cells.style.color.get_truecolor()  # the image id, as a colour
        image_id = widget._image_id
        assert tuple(colour) == ((image_id >> 16) & 255, (image_id >> 8) & 255, image_id & 255)


async def test_iterm_sends_a_png_over_the_cells_from_the_top_left(written: list[str]) -> None:
    app = OneImage(ItermImage)
    async with app.run_test(size=(80, 30)) as pilot:
        preview = Image.effect_noise((64, 64), 60).convert("RGB")
        app.query_one(ItermImage).image = preview
        await pilot.pause(0.1)
        sent = "".join(written)
        found = re.search(r"\x1b\[1;1H\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]+)\x07", sent)
        assert found, "an inline image at the widget's top-left cell"
        keys = dict(kv.split("=") for kv in found.group(1).split(";"))
        assert (keys["inline"], keys["width"], keys["height"]) == ("1", "40", "20")
        png = Image.open(io.BytesIO(base64.standard_b64decode(found.group(2))))
        assert png.size == (64, 64) and png.convert("RGB").tobytes() == preview.tobytes()
        region = app.query_one(ItermImage).region
        after = re.search(r"File=[^\x07]*\x07\x1b\[(\d+);(\d+)H", sent)
        assert after and (int(after[1]), int(after[2])) == (region.bottom, region.right + 1), "at its last line's end"
