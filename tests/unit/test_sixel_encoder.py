"""The sixel encoder (ui/sixel_encoder.py), both ways it runs: compiled (ui/_sixel.c) and numpy.
Its output, decoded here by a plain reading of the sixel format, is the quantized image pixel
for pixel, with its palette, for pictures of every kind and size (noise, gradients, one colour,
sizes off the six-pixel band, transparency); the two write the same bytes; the compiled one is
built wherever a C compiler is; and it quantizes as textual-image does, so the colours on screen
are the same."""

from __future__ import annotations

import re
import shlex
import shutil
import sysconfig

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from textual_image import _sixel as textual_sixel

from spatiora_tui.ui import sixel_encoder
from spatiora_tui.ui.sixel_encoder import encode, quantize


@pytest.fixture(params=["compiled", "numpy"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test below runs on both encoders; the compiled one's absence is
    test_the_compiled_encoder_is_built_where_a_compiler_is's failure."""
    if request.param == "compiled" and sixel_encoder._compiled_body is None:
        pytest.skip("the compiled sixel encoder is not built here")
    if request.param == "numpy":
        monkeypatch.setattr(sixel_encoder, "_compiled_body", None)
    return str(request.param)


def decode(data: bytes) -> tuple[np.ndarray, dict[int, tuple[int, int, int]]]:
    """A sixel sequence's pixels (palette indices; -1 where none is set) and its colours."""
    assert data.startswith(b"\x1bP") and data.endswith(b"\x1b\\")
    body = data[data.index(b"q") + 1 : -2]
    raster = re.match(rb'"1;1;(\d+);(\d+)', body)
    assert raster is not None, "raster attributes: 1:1 pixels, width and height"
    width, height = int(raster[1]), int(raster[2])
    body = body[raster.end() :]
    palette: dict[int, tuple[int, int, int]] = {}
    pixels = np.full((height + 6, width + 1), -1, dtype=np.int64)
    at = x = band = 0
    colour = -1
    while at < len(body):
        byte = body[at : at + 1]
        if byte == b"#":
            match = re.match(rb"#(\d+)(;2;(\d+);(\d+);(\d+))?", body[at:])
            assert match is not None
            if match[2]:
                palette[int(match[1])] = (int(match[3]), int(match[4]), int(match[5]))
            else:
                colour = int(match[1])
            at += match.end()
            continue
        if byte in (b"$", b"-"):
            x, band = 0, band + (byte == b"-")
            at += 1
            continue
        repeat = 1
        if byte == b"!":
            match = re.match(rb"!(\d+)", body[at:])
            assert match is not None
            repeat, at = int(match[1]), at + match.end()
            byte = body[at : at + 1]
        sixel = byte[0] - 0x3F
        assert 0 <= sixel < 64 and colour in palette and x + repeat <= width
        for bit in range(6):
            if sixel >> bit & 1:
                pixels[band * 6 + bit, x : x + repeat] = colour
        x += repeat
        at += 1
    assert (pixels[height:] == -1).all(), "nothing drawn below the image"
    return pixels[:height, :width], palette


def picture(kind: str, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if kind == "gradient":
        return Image.fromarray(
            np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], -1).astype(np.uint8)
        )
    if kind == "flat":
        return Image.new("RGB", (width, height), (200, 40, 90))
    # runs of one colour longer than 9, 99 and 999 columns, for the repeat counts' digits
    stripes = np.where(x < width // 2, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([stripes, 255 - stripes, stripes], -1))


@pytest.mark.parametrize(
    "kind, width, height",
    [
        ("noise", 64, 48),
        ("noise", 37, 13),  # not a whole number of bands
        ("gradient", 256, 256),
        ("gradient", 1, 1),
        ("flat", 50, 7),
        ("stripes", 2400, 6),
    ],
)
def test_the_output_is_the_quantized_image_pixel_for_pixel(
    implementation: str, kind: str, width: int, height: int
) -> None:
    image = picture(kind, width, height)
    quantized = np.asarray(quantize(image).convert("RGB"), dtype=np.int64)
    pixels, palette = decode(encode(image))
    assert (pixels >= 0).all(), "every pixel drawn"
    on_screen = np.array([palette[index] for index in range(max(palette) + 1)])[pixels]
    assert (on_screen == (quantized * 100 + 127) // 255).all(), "each pixel the quantized colour, in sixel's percent"
    assert len(set(palette.values())) == len(palette), "no colour defined twice"


def test_it_quantizes_as_textual_image_does_so_the_colours_on_screen_are_the_same() -> None:
    image = picture("noise", 96, 64)
    ours = np.asarray(quantize(image).convert("RGB"))
    theirs = textual_sixel._prepare_image(image, textual_sixel.SixelOptions(), (0, 0, 0, 1.0))
    assert (ours == np.asarray(theirs.convert("RGB"))).all()


def test_transparency_is_drawn_over_the_background(implementation: str) -> None:
    image = Image.new("RGBA", (12, 12), (255, 0, 0, 0))
    pixels, palette = decode(encode(image, background=(0, 0, 255)))
    (colour,) = set(pixels.ravel().tolist())
    assert palette[colour] == (0, 0, 100)


def test_the_most_frequent_colour_has_the_shortest_number(implementation: str) -> None:
    image = Image.new("RGB", (40, 12), (10, 200, 30))
    image.paste((250, 250, 250), (0, 0, 3, 12))
    pixels, palette = decode(encode(image))
    assert palette[0] == (4, 78, 12) and (pixels == 0).sum() == 37 * 12


def test_fewer_colours_when_asked(implementation: str) -> None:
    _, palette = decode(encode(picture("noise", 64, 64), colors=16))
    assert len(palette) <= 16


def test_the_compiled_encoder_is_built_where_a_compiler_is() -> None:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the numpy encoder is the one that runs")
    assert sixel_encoder.IMPLEMENTATION == "compiled", (
        "a C compiler is here but ui/_sixel.c is not built: `pip install -e .` (or `make setup`) builds it"
    )


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 40), st.integers(1, 70)),
        elements=st.integers(0, 255) | st.sampled_from([0, 1, 7]),
    )
)
def test_both_encoders_draw_the_same_pixels(indices: np.ndarray) -> None:
    """The compiled encoder lays colours out differently (spans packed into passes, the first
    drawn solid and overdrawn): the picture must be the same, pixel for pixel."""
    if sixel_encoder._compiled_body is None:
        pytest.skip("the compiled sixel encoder is not built here")
    height, width = indices.shape
    count = int(indices.max()) + 1
    header = b'\x1bP0;1;0q"1;1;%d;%d' % (width, height) + b"".join(b"#%d;2;0;0;0" % i for i in range(count))
    compiled, _ = decode(header + sixel_encoder._compiled_body(indices, width, height, count) + b"\x1b\\")
    plain, _ = decode(header + sixel_encoder._body(indices, count) + b"\x1b\\")
    assert (compiled == indices).all() and (plain == indices).all()


def test_the_compiled_encoder_writes_fewer_bytes_for_the_same_picture() -> None:
    if sixel_encoder._compiled_body is None:
        pytest.skip("the compiled sixel encoder is not built here")
    for kind in ("noise", "gradient"):
        paletted = quantize(picture(kind, 256, 96))
        indices, palette = sixel_encoder.compact(np.asarray(paletted, dtype=np.uint8), paletted.getpalette() or [])
        count = int(indices.max()) + 1
        compiled = sixel_encoder._compiled_body(indices, 256, 96, count)
        assert len(compiled) < 0.9 * len(sixel_encoder._body(indices, count)), kind
