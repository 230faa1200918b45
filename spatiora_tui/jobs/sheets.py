"""Sheets: a batch's contact sheet and a sweep's labelled grid, saved beside the images.

A sheet is a PNG like any other output: written atomically, never over an existing file, with
the AUTOMATIC1111 `parameters` text of its first image (so dropping it on A1111's PNG Info, or
reloading it here, gives that image's settings) and a `spatiora` chunk naming the files it shows.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from spatiora_tui import atomic
from spatiora_tui.jobs.job import Group, Job, JobState
from spatiora_tui.outputs import PARAMETERS_KEY, SPATIORA_KEY, a1111_parameters, read_metadata

#: Longest side of a sheet; bigger sheets have their tiles scaled down.
MAX_SHEET_SIDE = 4096
#: Space between tiles, and the background behind them (A1111's grids are white).
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
#: A cell that made no image (failed or cancelled) is drawn in this grey, with the reason.
EMPTY = (224, 224, 224)


class SheetError(Exception):
    """The sheet could not be made or saved; the images themselves are saved."""


def _image_of(job: Job) -> Image.Image:
    if job.result is not None and job.result.image is not None:
        return job.result.image.convert("RGB")
    if job.path is None:
        raise SheetError(f"job {job.id} has no image")
    try:
        with Image.open(job.path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise SheetError(f"could not read {job.path} for the sheet: {exc}") from None


def _parameters_of(job: Job) -> str | None:
    if job.result is not None:
        return a1111_parameters(job.result)
    if job.path is not None:
        try:
            return read_metadata(job.path).parameters
        except OSError:
            return None
    return None


def contact_sheet(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """The images in rows of `columns` (default: a near-square grid), each in a tile the size of
    the largest, scaled down as a whole when the sheet would pass MAX_SHEET_SIDE."""
    if not images:
        raise SheetError("no images for a sheet")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    tile_w, tile_h = max(i.width for i in images), max(i.height for i in images)
    scale = min(1.0, MAX_SHEET_SIDE / (columns * (tile_w + GAP)), MAX_SHEET_SIDE / (rows * (tile_h + GAP)))
    tw, th = max(1, int(tile_w * scale)), max(1, int(tile_h * scale))
    sheet = Image.new("RGB", (columns * tw + (columns - 1) * GAP, rows * th + (rows - 1) * GAP), BACKGROUND)
    for n, image in enumerate(images):
        if image.size != (tw, th):
            image = image.resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(image, ((n % columns) * (tw + GAP), (n // columns) * (th + GAP)))
    return sheet


def save_contact_sheet(done: list[Job], out_dir: Path, group: Group) -> Path:
    """Save the sheet of a finished group's images (in the group's order) beside them."""
    return _save_sheet(contact_sheet([_image_of(job) for job in done]), done, out_dir, group)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (FreeType)
    except (TypeError, OSError, ImportError):  # an old Pillow, or one without FreeType
        return ImageFont.load_default()


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` (a word wider than that gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def _text_block(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    line_h: int,
) -> None:
    """`text` wrapped and centred in `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    lines = _wrap(text, font, right - left - 4)
    y = top + max(0, (bottom - top - line_h * len(lines)) // 2)
    for line in lines:
        draw.text(((left + right) / 2, y), line, fill=TEXT, font=font, anchor="ma")
        y += line_h


def sweep_grid(
    cells: dict[tuple[int, ...], Image.Image | str],
    axes: tuple[tuple[str, tuple[str, ...]], ...],
    missing: str = "not run",
) -> Image.Image:
    """The labelled grid of a sweep, as A1111's X/Y/Z plot draws it: X values across the top,
    Y values down the left, one grid per Z value under its title. `cells` maps (x, y, z) indices
    to an image, or to the reason a cell has none (drawn as a grey tile; `missing` for a cell
    not in `cells`)."""
    if not any(isinstance(v, Image.Image) for v in cells.values()):
        raise SheetError("no images for a grid")
    counts = [len(labels) for _, labels in axes] + [1] * (3 - len(axes))
    nx, ny, nz = counts[:3]
    images = [v for v in cells.values() if isinstance(v, Image.Image)]
    tile_w, tile_h = max(i.width for i in images), max(i.height for i in images)
    # Labels are sized for the tiles as drawn, so scale first (the label bands are ~1/4 tile).
    side_w = tile_w // 2 if ny > 1 else 0
    scale = min(
        1.0,
        MAX_SHEET_SIDE / (side_w + nx * (tile_w + GAP)),
        MAX_SHEET_SIDE / (nz * (tile_h // 3 + ny * (tile_h + GAP) + tile_h // 4)),
    )
    tw, th = max(1, int(tile_w * scale)), max(1, int(tile_h * scale))
    font_size = max(10, min(48, tw // 12))
    font = _font(font_size)
    line_h = font_size + font_size // 4
    head_h = line_h * 3  # room for three lines of an X label
    side_w = max(tw // 2, 6 * font_size) if ny > 1 else 0
    title_h = line_h * 2 if nz > 1 else 0
    panel_h = title_h + head_h + ny * (th + GAP)
    sheet = Image.new("RGB", (side_w + nx * (tw + GAP), nz * panel_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for z in range(nz):
        top = z * panel_h
        if nz > 1:
            _text_block(draw, (0, top, sheet.width, top + title_h), axes[2][1][z], font, line_h)
        grid_top = top + title_h + head_h
        for x in range(nx):
            left = side_w + x * (tw + GAP)
            _text_block(draw, (left, top + title_h, left + tw, grid_top), axes[0][1][x], font, line_h)
        for y in range(ny):
            row_top = grid_top + y * (th + GAP)
            if ny > 1:
                _text_block(draw, (0, row_top, side_w, row_top + th), axes[1][1][y], font, line_h)
            for x in range(nx):
                left = side_w + x * (tw + GAP)
                value = cells.get((x, y, z)[: len(axes)], missing)
                if isinstance(value, Image.Image):
                    sheet.paste(
                        value if value.size == (tw, th) else value.resize((tw, th), Image.Resampling.LANCZOS),
                        (left, row_top),
                    )
                else:
                    draw.rectangle((left, row_top, left + tw - 1, row_top + th - 1), fill=EMPTY)
                    _text_block(draw, (left, row_top, left + tw, row_top + th), value, font, line_h)
    return sheet


def save_sweep_grid(members: list[Job], out_dir: Path, group: Group) -> Path:
    """Save the labelled grid of a finished sweep beside its images; `members` are all its jobs,
    those that made no image drawn as grey tiles saying why."""
    done = [job for job in members if job.state is JobState.DONE]
    cells: dict[tuple[int, ...], Image.Image | str] = {job.cell: job.state.value for job in members}
    cells.update((job.cell, _image_of(job)) for job in done)
    return _save_sheet(sweep_grid(cells, group.axes), done, out_dir, group)


def _save_sheet(sheet: Image.Image, done: list[Job], out_dir: Path, group: Group) -> Path:
    info = PngImagePlugin.PngInfo()
    parameters = _parameters_of(done[0])
    if parameters:
        info.add_text(PARAMETERS_KEY, parameters)
    record: dict[str, object] = {
        "sheet": group.kind.value,
        "group": group.id,
        "images": [str(j.path) if j.path else None for j in done],
    }
    if group.axes:
        record["axes"] = [[title, list(labels)] for title, labels in group.axes]
    info.add_itxt(SPATIORA_KEY, json.dumps(record, separators=(",", ":")))
    stem = f"{done[0].path.stem}-{group.kind.value}" if done[0].path is not None else f"{group.id}-sheet"
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", pnginfo=info)
    try:
        return atomic.write_new(out_dir, stem, ".png", buffer.getvalue())
    except OSError as exc:
        raise SheetError(f"could not save the sheet in {out_dir}: {exc.strerror or exc}") from None


class GroupSheets:
    """The thumbnails of the batches and sweeps under way, and the sheet each makes so far: a
    batch's images as a contact sheet, a sweep's as its labelled grid (cells still to come in
    grey). A front end shows the sheet as each image arrives."""

    def __init__(self, side: int = 256) -> None:
        self._side = side
        self._images: dict[str, dict[tuple[int, ...], Image.Image]] = {}

    def add(self, job: Job, image: Image.Image) -> Image.Image | None:
        """`job`'s image joins its group; the group's sheet so far (None for a batch's first)."""
        images = self._images.setdefault(job.group, {})
        thumb = image.copy()
        thumb.thumbnail((self._side, self._side))
        images[job.cell or (len(images),)] = thumb
        if job.axes:
            cells: dict[tuple[int, ...], Image.Image | str] = dict(images)
            return sweep_grid(cells, job.axes, missing="to come")
        return contact_sheet(list(images.values())) if len(images) > 1 else None

    def drop(self, group: str) -> None:
        """The group ended: its thumbnails go."""
        self._images.pop(group, None)
