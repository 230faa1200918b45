"""Each way of drawing an image, per frame: the bytes it writes to the terminal and the UI
thread's time from a new image to its bytes written, side by side in one run.

Each widget (ui/images.widget_class: sixel, kitty with placeholders, kitty placed directly,
iTerm2, half-cell; and textual-image's own sixel and kitty widgets for comparison) sits in a
Textual app the size of the preview box of a 150x44 terminal (55x27 cells of 9x18 pixels), with
its driver's writes counted (the headless driver made to take the screen's updates as a
terminal's driver does). Frames, made here so the run needs no model:

- latent2rgb preview: 64x64, what a step preview of a 512x512 image is (smooth blobs, each
  frame a little further from the first to the last, as steps go);
- TAESD preview: the same at 512x512;
- final image: 512x512, a smooth picture with detail; and a noise-like one, as the random-weights
  demo draws (the worst case for sixel).

Run: `python -m benchmarks.image_methods [--frames 6]`. Prints the median per frame; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual.app import App, ComposeResult
from textual.drivers.headless_driver import HeadlessDriver
from textual.widget import Widget
from textual_image._terminal import CellSize, get_cell_size

CELLS = (55, 27)
CELL_PX = (9, 18)


def frames(count: int) -> dict[str, list[Image.Image]]:
    """`count` different frames of each kind."""
    rng = np.random.default_rng(7)
    made: dict[str, list[Image.Image]] = {"latent2rgb preview 64x64": [], "TAESD preview 512x512": []}
    made |= {"final image 512x512": [], "noise-like final 512x512": []}
    y, x = np.mgrid[0:512, 0:512]
    start, end = (rng.integers(0, 256, (8, 8, 3)).astype(np.float64) for _ in range(2))
    for step in range(count):  # step previews change a little from one to the next
        mix = (start + (end - start) * step / max(1, count - 1)).astype(np.uint8)
        blobs = Image.fromarray(mix).resize((64, 64), Image.Resampling.BICUBIC)
        made["latent2rgb preview 64x64"].append(blobs)
        made["TAESD preview 512x512"].append(blobs.resize((512, 512), Image.Resampling.BICUBIC))
        shift = int(rng.integers(0, 64))
        base = np.stack([(x + shift) // 2, y // 2, (x + y) // 4], -1).astype(np.float64)
        detail = rng.normal(0, 6, (512, 512, 3))
        made["final image 512x512"].append(Image.fromarray(np.clip(base + detail, 0, 255).astype(np.uint8)))
        noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1))
        made["noise-like final 512x512"].append(noise.resize((512, 512), Image.Resampling.BICUBIC))
    return made


def methods() -> dict[str, type[Widget]]:
    from textual_image.widget import SixelImage as TextualSixel
    from textual_image.widget import TGPImage

    from spatiora_tui.ui.images import widget_class
    from spatiora_tui.ui.terminal import Choice

    ours = {m: widget_class(Choice(m, "benchmark")) for m in ("sixel", "kitty", "kitty-direct", "iterm", "halfcell")}
    return {
        **ours,
        "halfcell, 256 colours": ours["halfcell"],
        "sixel (textual-image)": TextualSixel,
        "kitty (textual-image)": TGPImage,
    }


class Box(App[None]):
    def __init__(self, widget_class: type[Widget]) -> None:
        super().__init__()
        self.widget_class = widget_class

    def compose(self) -> ComposeResult:
        widget = self.widget_class(id="img")
        widget.styles.width, widget.styles.height = CELLS
        yield widget


async def measure(widget_class: type[Widget], images: list[Image.Image]) -> tuple[float, float]:
    """(median ms, median bytes) from setting each image to its bytes written."""
    written: list[int] = []
    times, sizes, idle = [], [], []
    HeadlessDriver.write = lambda self, data: written.append(len(data))  # type: ignore[method-assign]
    HeadlessDriver.is_headless = property(lambda self: False)  # type: ignore[method-assign, assignment]
    app = Box(widget_class)
    async with app.run_test(size=(CELLS[0] + 2, CELLS[1] + 2)) as pilot:
        widget: Any = app.query_one("#img")
        await pilot.pause(0.05)
        for image in images:
            start = time.process_time()
            await pilot.pause(0.05)
            idle.append(time.process_time() - start)
            written.clear()
            start = time.process_time()
            widget.image = image
            await pilot.pause(0.05)
            times.append(time.process_time() - start)
            sizes.append(sum(written))
    # The process's CPU time over the frame, less that of as long a pause with nothing to draw.
    times = [(t - statistics.median(idle)) * 1000 for t in times]
    return statistics.median(times), statistics.median(sizes)


class _Counter:
    """sys.__stdout__ while measuring: textual-image's kitty widget writes there itself."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: str) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    get_cell_size._result = CellSize(*CELL_PX)
    made = frames(args.frames)
    print(f"box {CELLS[0]}x{CELLS[1]} cells of {CELL_PX[0]}x{CELL_PX[1]} px; median of {args.frames} frames")
    print(f"{'method':<24}" + "".join(f"{kind:>28}" for kind in made))
    for name, widget_class in methods().items():
        # A truecolor terminal, as COLORTERM says; "256 colours" is tmux without its RGB feature,
        # where every colour is matched to the 256-colour palette.
        os.environ["COLORTERM"] = "" if "256" in name else "truecolor"
        os.environ["TERM"] = "xterm-256color"
        cells = []
        for images in made.values():
            counter = _Counter()
            saved, sys.__stdout__ = sys.__stdout__, counter  # type: ignore[assignment, misc]
            try:
                ms, size = asyncio.run(measure(widget_class, images))
            finally:
                sys.__stdout__ = saved  # type: ignore[misc]
            size += counter.count / len(images)
            cells.append(f"{size / 1024:8.1f} KB {ms:7.1f} ms")
        print(f"{name:<24}" + "".join(f"{cell:>28}" for cell in cells))
    print("KB: bytes written to the terminal per frame; ms: CPU time per frame (the process's, less an idle")
    print("pause's): scaling, encoding and Textual's drawing")


if __name__ == "__main__":
    main()
