"""Half-cell drawing cost per frame: textual-image's renderable vs Spatiora's HalfcellImage.

Run: `python -m benchmarks.halfcell`. Frames: a photo (textual-image's bundled sample)
blurred and noised the way x0 previews sharpen over 20 steps, and pure noise (the demo model's
previews; every cell a new colour pair). 64x32 cells, the size of a 512x512 image's preview.
Both sides stop at Strips/segments for Textual; writing to a terminal comes on top of either.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from PIL import Image, ImageFilter
from rich.console import Console
from rich.segment import Segment

WIDTH, HEIGHT, STEPS = 64, 32, 20


def denoising_frames() -> list[Image.Image]:
    import textual_image

    with Image.open(os.path.join(os.path.dirname(textual_image.__file__), "gracehopper.jpg")) as original:
        photo = original.convert("RGB").resize((64, 64))
    rng = np.random.default_rng(0)
    frames = []
    for i in range(STEPS):
        t = (i + 1) / STEPS
        sharp = np.asarray(photo.filter(ImageFilter.GaussianBlur(6 * (1 - t))), dtype=np.float32)
        noisy = sharp * t + (1 - t) * 128 + rng.normal(0, 30 * (1 - t), sharp.shape)
        frames.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return frames


def noise_frames() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(STEPS)]


def textual_image_ms(frames: list[Image.Image]) -> float:
    from textual_image.renderable.halfcell import Image as HalfcellRenderable

    console = Console(width=WIDTH, height=HEIGHT, color_system="truecolor")
    options = console.options.update_dimensions(WIDTH, HEIGHT)
    times = []
    for frame in frames:
        start = time.perf_counter()
        list(Segment.split_and_crop_lines(console.render(HalfcellRenderable(frame, WIDTH, HEIGHT), options), WIDTH))
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def spatiora_ms(frames: list[Image.Image]) -> float:
    from spatiora_tui.ui.widgets.halfcell import HalfcellImage

    widget = HalfcellImage()
    times = []
    for frame in frames:  # one widget across frames, as in the app: its caches carry over
        widget._image = frame  # the image setter also asks the (absent) app for a repaint
        start = time.perf_counter()
        widget._build(WIDTH, HEIGHT)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    print(f"median ms per {WIDTH}x{HEIGHT}-cell frame over {STEPS} frames")
    for label, frames in (("denoising photo", denoising_frames()), ("pure noise", noise_frames())):
        ti, ours = textual_image_ms(frames), spatiora_ms(frames)
        print(f"{label:16s} textual-image {ti:6.1f}   HalfcellImage {ours:6.1f}   ratio {ti / ours:4.1f}x")


if __name__ == "__main__":
    main()
