"""A sixel encoder for previews at every step: compiled where it could be built, else numpy.

textual-image's encoder walks each band's colours and runs in Python: 0.3-0.7 s for a 512x512
frame of a noise-like image on a 2-core CPU, every millisecond of it taken from denoising
(docs/performance.md). This one quantizes the same way (Pillow's fast octree, 256 colours, no
dithering: the same pixels, so the same colour error) and then builds every band's rows at once:

1. a row per (band, colour) present; in each band's column, one set cell per colour among its
   six pixels, holding the bits of the pixels of that colour (six whole-image comparisons); the
   cells sorted row-major (a radix sort on 16-bit row numbers);
2. the cells cut into runs of equal sixels, each with the gap of unset ones before it;
3. every token (a row's colour select, its gaps and runs, its `$` or the band's `-`) expanded by
   one repeat of its last byte to its length, then the digits of `!N` and `#N` written over the
   front of theirs from a table: no Python loop over bands, rows or runs.

A run of 4 or more equal sixels is written `!N<sixel>`; shorter ones as they are. Colours are
defined once, in the header (`#i;2;r;g;b`, in percent). tests/unit/test_sixel_encoder.py decodes
the output and compares it pixel for pixel with the quantized image.

Where the install had a C compiler (pyproject.toml's ext-modules), ui/_sixel.c writes the same
picture by walking each band once, with each colour's spans packed into passes (the first drawn
solid and overdrawn by the rest): on a noise-like 512x512 frame 2x faster than this numpy code
and 20-29% fewer bytes (docs/terminals.md). `IMPLEMENTATION` says which one runs; `spatiora
doctor` shows it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image


def _load_compiled() -> Callable[[Any, int, int, int], bytes] | None:
    try:
        from spatiora_tui.ui._sixel import encode_body
    except ImportError:  # no C compiler at install (or built for another Python): numpy below
        return None
    return encode_body


_compiled_body = _load_compiled()
#: "compiled" (ui/_sixel.c) or "numpy".
IMPLEMENTATION = "numpy" if _compiled_body is None else "compiled"
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
    return encode_paletted(*compact(np.asarray(paletted, dtype=np.uint8), paletted.getpalette() or []))


def compact(indices: np.ndarray[Any, Any], palette: list[int]) -> tuple[np.ndarray[Any, Any], list[int]]:
    """The same picture as sixel draws it, in fewer bytes: palette entries that are one colour
    in sixel's percent RGB become one (fewer rows to write per band), unused ones go, and the
    most frequent colours get the smallest numbers (shorter `#N`). Colours on screen unchanged."""
    entries = len(palette) // 3
    if not indices.size or not entries:
        return indices, palette
    rgb = np.asarray(palette[: 3 * entries], dtype=np.int64).reshape(-1, 3)
    frequency = np.bincount(indices.ravel(), minlength=entries)[:entries]
    used = np.flatnonzero(frequency)
    key = ((rgb[used] * 100 + 127) // 255) @ np.array([101 * 101, 101, 1])
    colours, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    weight = np.bincount(inverse, weights=frequency[used])
    rank = np.lexsort((colours, -weight))  # most frequent first; ties by colour
    new_number = np.empty(rank.size, dtype=np.uint8)
    new_number[rank] = np.arange(rank.size)
    table = np.zeros(256, dtype=np.uint8)
    table[used] = new_number[inverse]
    return table[indices], rgb[used[first[rank]]].ravel().tolist()


def encode_paletted(indices: np.ndarray[Any, Any], palette: list[int]) -> bytes:
    """A sixel sequence for `indices` (height x width palette indices) with `palette` (r, g, b,
    r, g, b, … in 0-255)."""
    height, width = indices.shape
    count = int(indices.max()) + 1 if indices.size else 0
    header = b'"1;1;%d;%d' % (width, height) + _colour_definitions(palette, count)
    if not indices.size:
        body = b""
    elif _compiled_body is not None and indices.dtype == np.uint8:
        body = _compiled_body(np.ascontiguousarray(indices), width, height, count)
    else:
        body = _body(indices, count)
    return DCS + b"0;1;0q" + header + body + ST


def _body(indices: np.ndarray[Any, Any], count: int) -> bytes:
    """The bands of `indices` (palette indices below `count`) as sixel rows, in numpy."""
    height, width = indices.shape
    bands = -(-height // 6)

    # 1. Rows: one per (band, colour) present, band-major. Then the set cells: in each band's
    #    column, one per colour of its six pixels, with the bits of the pixels of that colour.
    present = np.zeros((bands, count), dtype=bool)
    present[(np.arange(height) // 6)[:, None], indices] = True
    rows = int(present.sum())
    row_id = np.zeros(bands * count, dtype=np.int32)
    row_id[present.ravel()] = np.arange(rows, dtype=np.int32)
    row_band, row_colour = np.nonzero(present)
    padded = np.full((bands * 6, width), count, dtype=np.uint16)  # below the image: no colour
    padded[:height] = indices
    column = padded.reshape(bands, 6, width)  # (band, pixel in the band, x)
    bits = np.zeros(column.shape, dtype=np.uint8)  # per pixel: the pixels of its colour
    for pixel in range(6):
        bits |= (column == column[:, pixel : pixel + 1]).view(np.uint8) << pixel
    first_of_colour = ((bits & _EARLIER) == 0) & (column != count)
    cell = np.flatnonzero(first_of_colour.transpose(0, 2, 1))  # in (band, x, pixel) order
    colour = column.transpose(0, 2, 1).ravel()[cell]
    cell_bits = bits.transpose(0, 2, 1).ravel()
    band_x = cell // 6
    cell_row = row_id[(band_x // width) * count + colour]
    order = np.argsort(cell_row.astype(np.uint16) if rows <= 1 << 16 else cell_row, kind="stable")
    cell_row, cell_col, values = cell_row[order], (band_x % width)[order], cell_bits[cell[order]]

    # 2. Runs of equal set sixels, each with the unset ones before it (a gap).
    starts = np.ones(values.size, dtype=bool)
    starts[1:] = (cell_row[1:] != cell_row[:-1]) | (cell_col[1:] != cell_col[:-1] + 1) | (values[1:] != values[:-1])
    run_start = np.flatnonzero(starts)
    run_len = np.diff(np.append(run_start, values.size))
    run_row, run_col, run_value = cell_row[run_start], cell_col[run_start], values[run_start] + SIXEL_BASE
    run_end = run_col + run_len
    first_run = np.ones(run_start.size, dtype=bool)
    first_run[1:] = run_row[1:] != run_row[:-1]
    gap = run_col - np.where(first_run, 0, np.roll(run_end, 1))

    # 3. Tokens, in order: per row its colour select, then per run its gap and itself, then `$`
    #    (or `-` ending a band). Each token's bytes are first all its last byte (a sixel, `#`'s
    #    first, `$` or `-`): one repeat over every token. Then the digits of repeats (`!N`) and
    #    colour selects are written over the front of theirs. No Python loop over rows or runs.
    per_row = np.bincount(run_row, minlength=rows)
    gap_token = np.arange(run_start.size) * 2 + 2 * run_row.astype(np.int64) + 1  # the run's own is next
    select_token = 2 * (np.cumsum(per_row) - per_row) + 2 * np.arange(rows)
    end_token = select_token + 2 * per_row + 1
    tokens = 2 * (run_start.size + rows)
    last = np.empty(tokens, dtype=np.uint8)
    number = np.zeros(tokens, dtype=np.int64)  # the N of a run's or a gap's `!N`
    size = np.empty(tokens, dtype=np.int64)
    last[gap_token], last[gap_token + 1], last[select_token] = SIXEL_BASE, run_value, ord("#")
    last[end_token] = np.where(np.append(row_band[1:] != row_band[:-1], True), ord("-"), ord("$"))
    repeat_size = _repeat_size(width)
    size[gap_token], size[gap_token + 1] = repeat_size[gap], repeat_size[run_len]
    size[select_token], size[end_token] = 1 + _digit_count(row_colour), 1
    number[gap_token], number[gap_token + 1] = gap, run_len
    out = np.repeat(last, size)
    offset = np.cumsum(size) - size
    repeats = np.flatnonzero(number >= RLE_FROM)
    out[offset[repeats]] = ord("!")
    _write_digits(out, offset[repeats] + 1, number[repeats], max(width, count))
    _write_digits(out, offset[select_token] + 1, row_colour, max(width, count))
    return out.tobytes()


#: For each pixel of a band's column, the bits of those above it (a colour's first pixel has
#: none of its own colour there).
_EARLIER = np.array([(1 << pixel) - 1 for pixel in range(6)], dtype=np.uint8)[:, None]


@functools.lru_cache(maxsize=4)
def _repeat_size(longest: int) -> np.ndarray[Any, Any]:
    """For N up to `longest`: the bytes of N equal sixels, written out below RLE_FROM, else `!N`
    and the sixel."""
    n = np.arange(longest + 1)
    size = np.where(n >= RLE_FROM, 2 + _digit_count(n), n)
    size.flags.writeable = False
    return size


@functools.lru_cache(maxsize=4)
def _decimals(largest: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For N up to `largest`: its decimal digits in ASCII, from the left (zeros after them), and
    how many there are."""
    n = np.arange(largest + 1)
    count = _digit_count(n)
    place = np.arange(int(count.max()))
    power = _POWERS[np.clip(count[:, None] - 1 - place, 0, None)]
    table = np.where(place < count[:, None], ord("0") + (n[:, None] // power) % 10, 0).astype(np.uint8)
    table.flags.writeable = count.flags.writeable = False
    return table, count


def _write_digits(
    out: np.ndarray[Any, Any], at: np.ndarray[Any, Any], numbers: np.ndarray[Any, Any], largest: int
) -> None:
    """Write each number (up to `largest`) in decimal into `out` from its offset in `at`."""
    decimals, counts = _decimals(largest)
    places = decimals.shape[1]
    count = counts[numbers]
    flat = decimals.ravel()
    index = numbers * places
    out[at] = flat[index]
    for place in range(1, places):
        has = np.flatnonzero(count > place)
        out[at[has] + place] = flat[index[has] + place]


_POWERS = 10 ** np.arange(7)


def _colour_definitions(palette: list[int], count: int) -> bytes:
    """`#i;2;r;g;b` for the first `count` palette entries, in percent (sixel's RGB)."""
    rgb = (np.asarray(palette[: 3 * count], dtype=np.int64).reshape(-1, 3) * 100 + 127) // 255
    return b"".join(b"#%d;2;%d;%d;%d" % (i, r, g, b) for i, (r, g, b) in enumerate(rgb.tolist()))


def _digit_count(numbers: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How many decimal digits each (non-negative) number takes."""
    return np.searchsorted(_POWERS[1:], numbers, side="right") + 1
