"""The UI's own drawing widgets: HalfcellImage (pixels to half-cell blocks) and Readout."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from textual.app import App, ComposeResult

from spatiora_tui.ui.widgets.halfcell import HalfcellImage, truecolor
from spatiora_tui.ui.widgets.readout import Readout

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)


def pixels(rows: list[list[tuple[int, int, int]]]) -> Image.Image:
    image = Image.new("RGB", (len(rows[0]), len(rows)))
    for y, row in enumerate(rows):
        for x, rgb in enumerate(row):
            image.putpixel((x, y), rgb)
    return image


class Holder(App[None]):
    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


def colours(segment) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    style = segment.style
    return tuple(style.color.triplet), tuple(style.bgcolor.triplet)


async def test_each_cell_shows_the_upper_pixel_over_the_lower_one() -> None:
    widget = HalfcellImage(pixels([[RED, GREEN], [BLUE, GREEN]]))
    widget.styles.width, widget.styles.height = 2, 1
    async with Holder(widget).run_test():
        strip = widget.render_line(0)
        segments = list(strip)
        assert [s.text for s in segments] == ["▀", "▀"]
        assert colours(segments[0]) == (RED, BLUE)
        assert colours(segments[1]) == ((0, 200, 0), (0, 200, 0))


async def test_runs_of_one_colour_pair_become_one_segment_and_the_image_is_scaled_to_the_box() -> None:
    widget = HalfcellImage(Image.new("RGB", (4, 4), RED))
    widget.styles.width, widget.styles.height = 8, 3
    async with Holder(widget).run_test():
        lines = [list(widget.render_line(y)) for y in range(3)]
        assert all([s.text for s in line] == ["▀" * 8] for line in lines)
        assert widget.render_line(3).cell_length == 8, "below the image: blank, not an error"


async def test_a_new_frame_replaces_the_old_and_a_path_works_too(tmp_path: Path) -> None:
    widget = HalfcellImage(Image.new("RGB", (2, 2), RED))
    widget.styles.width, widget.styles.height = 2, 1
    path = tmp_path / "blue.png"
    Image.new("RGB", (2, 2), BLUE).save(path)
    async with Holder(widget).run_test() as pilot:
        assert colours(next(iter(widget.render_line(0)))) == (RED, RED)
        widget.image = path
        await pilot.pause()
        assert colours(next(iter(widget.render_line(0)))) == (BLUE, BLUE)
        widget.image = None
        await pilot.pause()
        assert widget.render_line(0).text.strip() == ""


async def test_auto_size_keeps_the_aspect_ratio() -> None:
    # A 2:1 image in a 40-row container: half-cells make cells about twice as tall as wide.
    widget = HalfcellImage(Image.new("RGB", (200, 100), RED))
    widget.styles.height = 10
    widget.styles.width = "auto"
    async with Holder(widget).run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        assert widget.size.height == 10
        assert abs(widget.size.width - 40) <= 1


def test_truecolor_is_the_colour_rich_would_build() -> None:
    from rich.color import Color, ColorType
    from rich.color_triplet import ColorTriplet
    from rich.style import Style

    for rgb in (0x000000, 0xFFFFFF, 0x0883A5, 0x123456):
        r, g, b = rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF
        expected = Color(f"#{rgb:06x}", ColorType.TRUECOLOR, None, ColorTriplet(r, g, b))
        ours = truecolor(rgb)
        assert ours == expected and type(ours) is Color and type(ours.triplet) is ColorTriplet
        assert ours.triplet.red == r and ours.name == f"#{rgb:06x}"
        assert Style(color=ours).render("x") == Style(color=expected).render("x")


async def test_the_image_skips_only_the_ansi_to_truecolor_filter() -> None:
    from textual.filter import ANSIToTruecolor

    widget = HalfcellImage(Image.new("RGB", (2, 2), RED))
    async with Holder(widget).run_test() as pilot:
        app_filters = pilot.app.get_line_filters()
        assert any(isinstance(f, ANSIToTruecolor) for f in app_filters), "the filter this test is about"
        assert widget.get_line_filters() == [f for f in app_filters if not isinstance(f, ANSIToTruecolor)]


class CountingReadout(Readout):
    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(text, **kwargs)
        self.layouts: list[bool] = []

    def update(self, content="", *, layout: bool = True) -> None:
        self.layouts.append(layout)
        super().update(content, layout=layout)


async def test_readout_skips_repeats_and_lays_out_only_when_its_height_can_change() -> None:
    readout = CountingReadout("a\nb")
    readout.styles.width = 20
    async with Holder(readout).run_test() as pilot:
        await pilot.pause()
        readout.show("a\nb")
        assert readout.layouts == [], "the same text again changes nothing"
        readout.show("[b]c[/]\nd")
        assert readout.layouts == [False], "same number of short lines: repaint only"
        readout.show("one line")
        assert readout.layouts == [False, True], "fewer lines: the height changes"
        readout.show("x" * 40)
        assert readout.layouts == [False, True, True], "a line wider than the widget may wrap"
        assert readout.shown == "x" * 40


@pytest.mark.parametrize("method", ["sixel", "kitty", "kitty-direct", "iterm", "halfcell", "unicode"])
def test_each_method_has_a_widget_the_title_names(method: str) -> None:
    """In kitty, `auto` gave textual-image's AutoImage and the preview's title said "AutoImage"."""
    from spatiora_tui.ui.images import renderer_name, widget_class
    from spatiora_tui.ui.terminal import Choice

    assert renderer_name(widget_class(Choice(method, "asked"))) == method


def test_without_a_terminal_auto_draws_text_and_says_why() -> None:
    from spatiora_tui.ui.images import choose_drawing, describe

    assert describe(choose_drawing("auto")) == "unicode: not a terminal: images are drawn as text"
    assert choose_drawing("halfcell").method == "halfcell"
    with pytest.raises(ValueError, match="unknown renderer 'blocks'"):
        choose_drawing("blocks")


def test_the_save_keys_tooltip_says_what_the_action_does() -> None:
    """ctrl+s saves again every image whose save failed (KeySettings.save says so); its tooltip
    once said "the last image"."""
    import dataclasses

    from spatiora_tui.config import KeySettings
    from spatiora_tui.ui.app import SpatioraApp

    binding = next(b for b in SpatioraApp.BINDINGS if getattr(b, "id", None) == "save")
    doc = next(f for f in dataclasses.fields(KeySettings) if f.name == "save").metadata["doc"]
    assert "every image whose save failed" in doc
    assert "every image whose save failed" in binding.tooltip


def test_the_256_colour_match_is_riches_for_every_colour_kind() -> None:
    """In a 256-colour terminal (tmux without RGB) Rich matched every new colour of a half-cell
    preview in Python; the widget now does it for the whole image, and must pick as Rich did."""
    import numpy as np
    from rich.color import Color, ColorSystem
    from rich.color_triplet import ColorTriplet

    from spatiora_tui.ui.widgets.halfcell import xterm_256

    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, (4000, 3))
    greys = np.repeat(rng.integers(0, 256, (500, 1)), 3, axis=1) + rng.integers(-3, 4, (500, 3))
    edges = np.array([[0, 0, 0], [255, 255, 255], [94, 95, 96], [128, 128, 128], [255, 0, 0], [1, 2, 3]])
    every = np.clip(np.concatenate([colours, greys, edges]), 0, 255).astype(np.uint32)
    ours = xterm_256(every[None])[0]
    for (r, g, b), number in zip(every.tolist(), ours.tolist()):
        rich = Color.from_triplet(ColorTriplet(r, g, b)).downgrade(ColorSystem.EIGHT_BIT)
        assert rich.number == number, (r, g, b)


async def test_halfcell_cells_are_256_colour_indices_in_a_256_colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image
    from rich.color import ColorType
    from textual.app import App

    from spatiora_tui.ui.widgets.halfcell import HalfcellImage

    monkeypatch.setenv("COLORTERM", "")
    monkeypatch.setenv("TERM", "xterm-256color")

    class One(App[None]):
        def compose(self) -> ComposeResult:
            widget = HalfcellImage(Image.new("RGB", (8, 8), (200, 40, 40)), id="img")
            widget.styles.width, widget.styles.height = 8, 4
            yield widget

    app = One()
    async with app.run_test(size=(20, 8)) as pilot:
        await pilot.pause()
        assert app.console.color_system == "256"
        widget = app.query_one(HalfcellImage)
        [segment] = list(widget.render_line(0))
        assert segment.style.color.type == ColorType.EIGHT_BIT and segment.style.color.number == 160
