"""Sixel encoding per frame: textual-image's encoder against ours (ui/sixel_encoder.py) both ways
it runs, numpy and compiled (ui/_sixel.c), side by side on the same pictures, with the bytes each
sends and the mean colour error against the source (the same for all three: one quantizer, the
same pixels on screen).

Pictures, made here so the run needs no model: a noise-like frame like the random-weights demo's
(coloured noise blurred by one pixel, then upscaled 2x, as the demo's 64-pixel latents upscale),
and a smooth gradient like a real model's. Each at 512x512 and at 360x360 (the preview box of a
160x48 xterm).

Run: `python -m benchmarks.sixel_encode [--repeat 5]`. Prints the fastest of `--repeat` runs;
asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual_image import _sixel as textual_sixel

from spatiora_tui.ui import sixel_encoder


def pictures() -> dict[str, Image.Image]:
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1))
    y, x = np.mgrid[0:512, 0:512]
    gradient = Image.fromarray(np.stack([x // 2, y // 2, (x + y) // 4], -1).astype(np.uint8))
    made = {}
    for side in (512, 360):
        made[f"noise-like {side}x{side}"] = noise.resize((side, side), Image.Resampling.BICUBIC)
        made[f"smooth gradient {side}x{side}"] = gradient.resize((side, side))
    return made


def fastest_ms(encode: Callable[[Image.Image], object], image: Image.Image, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        encode(image)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def colour_error(image: Image.Image) -> float:
    """Mean absolute error per channel (0-255) of the quantized frame against the source."""
    quantized = np.asarray(sixel_encoder.quantize(image).convert("RGB"), dtype=np.int64)
    return float(np.abs(quantized - np.asarray(image.convert("RGB"), dtype=np.int64)).mean())


@contextlib.contextmanager
def numpy_only() -> Iterator[None]:
    """Our encoder with the compiled inner loop set aside: the numpy one runs."""
    compiled = sixel_encoder._compiled_body
    sixel_encoder._compiled_body = None
    try:
        yield
    finally:
        sixel_encoder._compiled_body = compiled


def encode_numpy(image: Image.Image) -> bytes:
    with numpy_only():
        return sixel_encoder.encode(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compiled = sixel_encoder.IMPLEMENTATION == "compiled"
    if not compiled:
        print("the compiled encoder is not built here (`pip install -e .` with a C compiler): its column is empty")
    print(
        f"{'frame':<26}{'textual-image':>15}{'numpy':>10}{'compiled':>11}{'x faster':>10}"
        f"{'KB theirs':>11}{'KB numpy':>10}{'KB compiled':>13}{'colour error':>14}"
    )
    for name, image in pictures().items():
        theirs = textual_sixel.image_to_sixels(image)
        numpy_bytes = len(encode_numpy(image))
        compiled_bytes = len(sixel_encoder.encode(image)) if compiled else float("nan")
        theirs_ms = fastest_ms(textual_sixel.image_to_sixels, image, args.repeat)
        numpy_ms = fastest_ms(encode_numpy, image, args.repeat)
        compiled_ms = fastest_ms(sixel_encoder.encode, image, args.repeat) if compiled else float("nan")
        best = compiled_ms if compiled else numpy_ms
        print(
            f"{name:<26}{theirs_ms:>12.1f} ms{numpy_ms:>7.1f} ms{compiled_ms:>8.1f} ms{theirs_ms / best:>9.1f}x"
            f"{len(theirs) / 1024:>11.0f}{numpy_bytes / 1024:>10.0f}{compiled_bytes / 1024:>13.0f}"
            f"{colour_error(image):>14.2f}"
        )
    print("x faster: textual-image's time over our fastest. colour error: the same for all three")
    print("(the same quantizer, the same pixels; tests/unit/test_sixel_encoder.py)")


if __name__ == "__main__":
    main()
