"""A sixel encoder in whole-array numpy operations, for previews at every step.

textual-image's encoder walks each band's colours and runs in Python: 0.3-0.7 s for a 512x512
frame of a noise-like image on a 2-core CPU, every millisecond of it taken from denoising
(docs/performance.md). This one quantizes the same way (Pillow's fast octree, 256 colours, no
dithering: the same pixels, so the same colour error) and then builds every band's rows at once:

1. a row per (band, colour) present; in each band's column, one set cell per colour among its
   six pixels, holding the bits of the pixels of that colour; the cells sorted row-major;
2. the cells cut into runs of equal sixels, each with the gap of unset ones before it;
3. every token (a row's colour select, its runs, its `$` or the band's `-`) written into one
   byte buffer at offsets from a cumulative sum: no Python loop over bands, rows or runs.

A run of 4 or more equal sixels is written `!N<sixel>`; shorter ones as they are. Colours are
defined once, in the header (`#i;2;r;g;b`, in percent). tests/unit/test_sixel_encoder.py decodes
the output and compares it pixel for pixel with the quantized image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

#: Sixels are the bytes 0x3F ('?': no pixel set) to 0x7E ('~': all six).
SIXEL_BASE = 0x3F
#: Equal sixels in a row from which `!N<sixel>` is shorter than the sixels themselves.
RLE_FROM = 4
DCS, ST = b"\x1bP", b"\x1b\\"


def quantize(image: Image.Image, colors: int = 256, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """`image` as a palette image of at most `colors` colours, transparency composited on
    `background`, quantized as textual-image does (fast octree, no dithering)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        under = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(under, rgba)
    return image.convert("RGB").quantize(colors=colors, method=Image.Quantize.FASTOCTREE)


def encode(image: Image.Image, colors: int = 256, background: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """`image` as one sixel sequence (DCS … ST), drawn at 1:1 pixel aspect."""
    paletted = quantize(image, colors, background)
    return encode_paletted(np.asarray(paletted, dtype=np.uint8), paletted.getpalette() or [])


def encode_paletted(indices: np.ndarray[Any, Any], palette: list[int]) -> bytes:
    """A sixel sequence for `indices` (height x width palette indices) with `palette` (r, g, b,
    r, g, b, … in 0-255)."""
    height, width = indices.shape
    count = int(indices.max()) + 1 if indices.size else 0
    header = b'"1;1;%d;%d' % (width, height) + _colour_definitions(palette, count)
    if not indices.size:
        return DCS + b"0;1;0q" + header + ST
    bands = -(-height // 6)

    # 1. Rows: one per (band, colour) present, band-major. Then the set cells: in each band's
    #    column, one per colour of its six pixels, with the bits of the pixels of that colour.
    band_of = np.arange(height) // 6
    present = np.zeros((bands, count), dtype=bool)
    present[band_of[:, None], indices] = True
    rows = int(present.sum())
    row_id = np.zeros((bands, count), dtype=np.int64)
    row_id[present] = np.arange(rows)
    row_band, row_colour = np.nonzero(present)
    padded = np.full((bands * 6, width), count, dtype=np.int64)  # below the image: no colour
    padded[:height] = indices
    column = padded.reshape(bands, 6, width).transpose(0, 2, 1)  # (band, x, pixel in the band)
    same = column[..., :, None] == column[..., None, :]
    bits = same.astype(np.uint8) @ (1 << np.arange(6, dtype=np.uint8))
    first_of_colour = ~(same & np.tril(np.ones((6, 6), dtype=bool), -1)).any(axis=-1)
    band, x, pixel = np.nonzero(first_of_colour & (column != count))
    colour = column[band, x, pixel]
    cell_row = row_id[band, colour]
    order = np.argsort(cell_row.astype(np.uint16) if rows <= 1 << 16 else cell_row, kind="stable")
    cell_row, cell_col = cell_row[order], x[order]  # row-major: each row's cells in column order
    values = bits[band, x, pixel][order]

    # 2. Runs of equal set sixels, each with the unset ones before it (a gap).
    starts = np.ones(values.size, dtype=bool)
    starts[1:] = (cell_row[1:] != cell_row[:-1]) | (cell_col[1:] != cell_col[:-1] + 1) | (values[1:] != values[:-1])
    run_start = np.flatnonzero(starts)
    run_len = np.diff(np.append(run_start, values.size))
    run_row, run_col, run_value = cell_row[run_start], cell_col[run_start], values[run_start] + SIXEL_BASE
    previous_end = np.zeros(run_start.size, dtype=np.int64)  # the column after the run before, in its row
    same_row = np.append(False, run_row[1:] == run_row[:-1])
    previous_end[same_row] = (run_col + run_len)[np.flatnonzero(same_row) - 1]
    gap = run_col - previous_end
    # Each run as two pieces, its gap (dropped when empty) and itself.
    piece_len = np.column_stack((gap, run_len)).ravel()
    piece_value = np.column_stack((np.full(run_start.size, SIXEL_BASE), run_value)).ravel()
    piece_row = np.repeat(run_row, 2)
    used = piece_len > 0
    lengths, values, row_of_piece = piece_len[used], piece_value[used].astype(np.uint8), piece_row[used]

    # 3. Tokens, in order: per row its colour select, its pieces, then `$` (or `-` ending a band).
    per_row = np.bincount(row_of_piece, minlength=rows)
    first_piece = np.cumsum(per_row) - per_row
    piece_token = np.arange(lengths.size) + 2 * row_of_piece + 1
    select_token = first_piece + 2 * np.arange(rows)
    end_token = select_token + per_row + 1
    tokens = lengths.size + 2 * rows
    long = lengths >= RLE_FROM
    digits = _digits(lengths)
    size = np.empty(tokens, dtype=np.int64)
    size[piece_token] = np.where(long, 2 + digits, lengths)
    size[select_token] = 1 + _digits(row_colour)
    size[end_token] = 1
    offset = np.cumsum(size) - size
    out = np.empty(int(size.sum()), dtype=np.uint8)

    at = offset[select_token]
    out[at] = ord("#")
    _write_number(out, at + 1, row_colour)
    band_ends = np.append(row_band[1:] != row_band[:-1], True)
    out[offset[end_token]] = np.where(band_ends, ord("-"), ord("$"))

    at = offset[piece_token[long]]
    out[at] = ord("!")
    _write_number(out, at + 1, lengths[long])
    out[at + 1 + digits[long]] = values[long]
    short = ~long
    short_at, short_len = offset[piece_token[short]], lengths[short]
    ramp = np.arange(int(short_len.sum())) - np.repeat(np.cumsum(short_len) - short_len, short_len)
    out[np.repeat(short_at, short_len) + ramp] = np.repeat(values[short], short_len)
    return DCS + b"0;1;0q" + header + out.tobytes() + ST


def _colour_definitions(palette: list[int], count: int) -> bytes:
    """`#i;2;r;g;b` for the first `count` palette entries, in percent (sixel's RGB)."""
    rgb = (np.asarray(palette[: 3 * count], dtype=np.int64).reshape(-1, 3) * 100 + 127) // 255
    return b"".join(b"#%d;2;%d;%d;%d" % (i, r, g, b) for i, (r, g, b) in enumerate(rgb.tolist()))


def _digits(numbers: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How many decimal digits each (non-negative) number takes."""
    count = np.ones(numbers.shape, dtype=np.int64)
    for power in (10, 100, 1000, 10000, 100000):
        count += numbers >= power
    return count


def _write_number(out: np.ndarray[Any, Any], at: np.ndarray[Any, Any], numbers: np.ndarray[Any, Any]) -> None:
    """Write each number in decimal into `out` from its offset in `at`."""
    digits = _digits(numbers)
    for place in range(int(digits.max()) if numbers.size else 0):
        has = digits > place
        power = 10 ** (digits[has] - 1 - place)
        out[at[has] + place] = ord("0") + (numbers[has] // power) % 10
